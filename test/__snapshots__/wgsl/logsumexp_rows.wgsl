// %1 = logsumexp_rows(%0) : f32[8]  # model.ts:10:5

struct Params {
  v: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let base = wid * params.v;
  var m = -3.4028234663852886e+38;
  var s = 0.0;
  for (var e = lid; e < params.v; e = e + 256u) {
    let x = logits[base + e];
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }
  }
  partial[lid] = m;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  let row_max = partial[0];
  workgroupBarrier();
  partial[lid] = s * exp(m - row_max);
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let row_sum = partial[0];
  workgroupBarrier();
  if (lid == 0u) { out[wid] = log(row_sum) + row_max; }
}
