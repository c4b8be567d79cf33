// %1 = kept_targets(%0) {ignoreIndex=-1, classes=96} : f32[]  # model.ts:10:5

struct Params {
  n: u32,
  classes: u32,
  error_slot: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> index_errors: array<atomic<u32>>;

// An index outside its range: kiln reads this slot back after the run and raises KILN_E011.
fn report_bad_index(position: u32, value: i32) {
  let at = params.error_slot * 4u;
  let key = bitcast<u32>(value) ^ 0x80000000u;
  atomicAdd(&index_errors[at], 1u);
  atomicMax(&index_errors[at + 1u], ~position);
  atomicMax(&index_errors[at + 2u], key);
  atomicMax(&index_errors[at + 3u], ~key);
}

const IGNORE_INDEX: i32 = -1;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  var kept = 0.0;
  for (var row = lid; row < params.n; row = row + 256u) {
    let label = targets[row];
    if (label != IGNORE_INDEX && bitcast<u32>(label) >= params.classes) { report_bad_index(row, label); }
    kept = kept + select(1.0, 0.0, label == IGNORE_INDEX);
  }
  partial[lid] = kept;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let kept_all = partial[0];
  workgroupBarrier();
  if (lid == 0u) { out[0] = kept_all; }
}
