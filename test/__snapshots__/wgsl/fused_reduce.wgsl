// %2 = fused_reduce(%0, %1) {op="sum", expr="mul($0, $1)", dims=[2], keepdim=false} : f32[2,24]  # model.ts:10:5

struct Params {
  count: u32,
  kept_shape0: u32,
  kept_stride0: u32,
  red_shape0: u32,
  red_stride0: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x0: array<f32>;
@group(0) @binding(2) var<storage, read> x1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 64u + lid;
  let k0 = wid;
  let base = k0 * params.kept_stride0;
  var acc: f32 = 0.0;
  for (var e = lid; e < params.count; e = e + 64u) {
    let r0 = e;
    let at = base + r0 * params.red_stride0;
    acc = (acc + (x0[at] * x1[at]));
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  if (lid == 0u) { out[wid] = total; }
}
