// %2 = cross_entropy(%0, %1) {ignoreIndex=-1} : f32[]  # model.ts:10:5

struct Params {
  rows: u32,
  c: u32,
  error_slot: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> index_errors: array<atomic<u32>>;

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
  var loss = 0.0;
  var kept = 0.0;
  for (var row = lid; row < params.rows; row = row + 256u) {
    let label = targets[row];
    if (label != IGNORE_INDEX) {
      if (bitcast<u32>(label) >= params.c) { report_bad_index(row, label); }
      let base = row * params.c;
      var row_max = -3.4028234663852886e+38;
      for (var e = 0u; e < params.c; e = e + 1u) { row_max = max(row_max, logits[base + e]); }
      var row_sum = 0.0;
      for (var e = 0u; e < params.c; e = e + 1u) { row_sum = row_sum + exp(logits[base + e] - row_max); }
      let picked = logits[base + u32(clamp(label, 0, i32(params.c) - 1))];
      loss = loss + log(row_sum) + row_max - picked;
      kept = kept + 1.0;
    }
  }
  partial[lid] = loss;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let loss_all = partial[0];
  workgroupBarrier();
  partial[lid] = kept;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let kept_all = partial[0];
  workgroupBarrier();
  // Every row ignored: 0 / 0, which PyTorch reports as NaN; WGSL promises no NaN, so do not rely on it.
  if (lid == 0u) { out[0] = loss_all / kept_all; }
}
