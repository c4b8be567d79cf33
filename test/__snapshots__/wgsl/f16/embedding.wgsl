// %2 = embedding(%0, %1) : f16[2,24,64]  # model.ts:10:5
enable f16;

struct Params {
  n: u32,
  c: u32,
  rows: u32,
  error_slot: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weight: array<f16>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  let r = gid / params.c;
  let id = idx[r];
  if (gid % params.c == 0u && bitcast<u32>(id) >= params.rows) { report_bad_index(r, id); }
  let row = u32(clamp(id, 0, i32(params.rows) - 1));
  out[gid] = weight[row * params.c + gid % params.c];
}
