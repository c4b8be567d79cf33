// %2 = masked_fill(%0, %1, -inf) : f32[2,4,8,8]  # model.ts:10:5

struct Params {
  n: u32,
  shape0: u32,
  shape1: u32,
  shape2: u32,
  shape3: u32,
  b_stride0: u32,
  b_stride1: u32,
  b_stride2: u32,
  b_stride3: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  var i_rest = gid;
  let i3 = i_rest % params.shape3;
  i_rest = i_rest / params.shape3;
  let i2 = i_rest % params.shape2;
  i_rest = i_rest / params.shape2;
  let i1 = i_rest % params.shape1;
  i_rest = i_rest / params.shape1;
  let i0 = i_rest;
  let b_at = i0 * params.b_stride0 + i1 * params.b_stride1 + i2 * params.b_stride2 + i3 * params.b_stride3;
  let c = kiln_f32_bits(0xff800000u); // -inf
  out[gid] = select(a[gid], c, (b[b_at] != 0u));
}
