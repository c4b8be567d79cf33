// %1 = decode_attention_merge(%0) {dtype="f32"} : f32[1,12,1,64]  # model.ts:10:5

struct Params {
  n: u32,
  d: u32,
  splits: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  let r = gid / params.d;
  let c = gid % params.d;
  let width = params.d + 2u; // a partial: [o (D), m, l]
  let row0 = r * params.splits * width;
  let masked = kiln_f32_bits(0xff800000u); // -inf
  var max_m = masked;
  for (var s = 0u; s < params.splits; s = s + 1u) { max_m = max(max_m, partials[row0 + s * width + params.d]); }
  var sum = 0.0;
  var acc = 0.0;
  for (var s = 0u; s < params.splits; s = s + 1u) {
    let at = row0 + s * width;
    let m = partials[at + params.d];
    // An empty split (m = -inf) weighs nothing.
    let w = select(0.0, exp2(m - max_m), m > masked);
    sum = fma(w, partials[at + params.d + 1u], sum);
    acc = fma(w, partials[at + c], acc);
  }
  // No key in any split (never in a decode step, which has its own key): zeros.
  out[gid] = select(0.0, acc / sum, sum > 0.0);
}
