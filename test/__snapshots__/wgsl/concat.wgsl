// %3 = concat(%0, %1, %2) {dim=2} : f32[2,24,96]  # model.ts:10:5

struct Params {
  n: u32,
  shape0: u32,
  shape1: u32,
  shape2: u32,
  s0_0: u32,
  s0_1: u32,
  s0_2: u32,
  start0: u32,
  s1_0: u32,
  s1_1: u32,
  s1_2: u32,
  start1: u32,
  s2_0: u32,
  s2_1: u32,
  s2_2: u32,
  start2: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x0: array<f32>;
@group(0) @binding(2) var<storage, read> x1: array<f32>;
@group(0) @binding(3) var<storage, read> x2: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
  if (i2 < params.start1) { out[gid] = x0[i0 * params.s0_0 + i1 * params.s0_1 + (i2 - params.start0) * params.s0_2]; }
  else if (i2 < params.start2) { out[gid] = x1[i0 * params.s1_0 + i1 * params.s1_1 + (i2 - params.start1) * params.s1_2]; }
  else { out[gid] = x2[i0 * params.s2_0 + i1 * params.s2_1 + (i2 - params.start2) * params.s2_2]; }
}
