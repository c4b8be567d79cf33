// %1 = softmax(%0) {dim=-1} : f16[2,4,24,24]  # model.ts:10:5
enable f16;

struct Params {
  size: u32,
  inner: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read_write> out: array<f16>;

fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 64u + lid;
  // Row wid: elements base + e * inner for e < size.
  let base = (wid / params.inner) * params.size * params.inner + wid % params.inner;
  var row_max = -3.4028234663852886e+38;
  for (var e = lid; e < params.size; e = e + 64u) { row_max = max(row_max, f32(x[base + e * params.inner])); }
  partial[lid] = row_max;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  let max_all = partial[0];
  workgroupBarrier();
  var row_sum = 0.0;
  for (var e = lid; e < params.size; e = e + 64u) { row_sum = row_sum + exp(f32(x[base + e * params.inner]) - max_all); }
  partial[lid] = row_sum;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let sum_all = partial[0];
  workgroupBarrier();
  // Only a row of -inf sums to 0: it gives NaN, as softmax does on the CPU and in PyTorch.
  let nan = kiln_f32_bits(0x7fc00000u);
  for (var e = lid; e < params.size; e = e + 64u) { let at = base + e * params.inner; out[at] = f16(select(exp(f32(x[at]) - max_all) / sum_all, nan, sum_all == 0.0)); }
}
