// %1 = slice_backward(%0) {shape=[2,24,96], dim=2, start=32, end=64, step=1} : f32[2,24,96]  # model.ts:10:5

struct Params {
  n: u32,
  start: u32,
  step: u32,
  g_len: u32,
  shape0: u32,
  shape1: u32,
  shape2: u32,
  g_stride0: u32,
  g_stride1: u32,
  g_stride2: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  var i_rest = gid;
  let i2 = i_rest % params.shape2;
  i_rest = i_rest / params.shape2;
  let i1 = i_rest % params.shape1;
  i_rest = i_rest / params.shape1;
  let i0 = i_rest;
  // The slice read x at start + j * step along dim 2: write grad there, zero elsewhere.
  let from_start = i2 - params.start;
  let j = from_start / params.step;
  let hit = i2 >= params.start && from_start % params.step == 0u && j < params.g_len;
  out[gid] = select(0.0, grad[select(0u, i0 * params.g_stride0 + i1 * params.g_stride1 + j * params.g_stride2, hit)], hit);
}
