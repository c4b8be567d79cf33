// %1 = found_inf(%0) : f32[]  # model.ts:10:5

struct Params {
  n: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn kiln_is_finite(value: f32) -> bool { return (bitcast<u32>(value) & 0x7f800000u) != 0x7f800000u; }

@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 1u + lid;
  if (gid > 0u) { return; }
  var found = 0.0;
  for (var i = 0u; i < params.n; i++) {
    if (!kiln_is_finite(x[i])) { found = 1.0; }
  }
  out[0] = found;
}
