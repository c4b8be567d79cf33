// %3 = amp_update_scale(%0, %1, %2) {growth_factor=2, backoff_factor=0.5, growth_interval=2000} : f32[2]  # model.ts:10:5

struct Params {
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> growth_tracker: array<f32>;
@group(0) @binding(3) var<storage, read> found_inf: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const GROWTH: f32 = 2.0;
const BACKOFF: f32 = 0.5;
const INTERVAL: f32 = 2000.0;
fn kiln_is_finite(value: f32) -> bool { return (bitcast<u32>(value) & 0x7f800000u) != 0x7f800000u; }

@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 1u + lid;
  if (gid > 0u) { return; }
  var next = scale[0];
  var tracker = 0.0;
  if (found_inf[0] != 0.0) {
    next = next * BACKOFF;
  } else if (growth_tracker[0] + 1.0 == INTERVAL) {
    let grown = next * GROWTH;
    if (kiln_is_finite(grown)) { next = grown; } // not past f32's range to inf
  } else {
    tracker = growth_tracker[0] + 1.0;
  }
  out[0] = next;
  out[1] = tracker;
}
