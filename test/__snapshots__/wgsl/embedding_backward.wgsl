// %2 = embedding_backward(%0, %1) {num=96} : f32[96,32]  # model.ts:10:5

struct Params {
  dim: u32,
  tokens: u32,
  num: u32,
  error_slot: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<i32>;
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

const GROUP: u32 = 256u;
var<workgroup> scan: array<u32, GROUP>; // inclusive prefix sums of the hit flags
var<workgroup> hits: array<u32, GROUP>; // the chunk's tokens with index r, in token order

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let r = wid;
  for (var col = lid; col < params.dim; col += GROUP) { out[r * params.dim + col] = 0.0; }
  for (var base = 0u; base < params.tokens; base += GROUP) {
    let t = base + lid;
    let id = idx[min(t, params.tokens - 1u)];
    if (r == 0u && t < params.tokens && bitcast<u32>(id) >= params.num) { report_bad_index(t, id); } // every row reads every index: row 0 reports
    let hit = t < params.tokens && id == i32(r);
    scan[lid] = select(0u, 1u, hit);
    workgroupBarrier();
    for (var step = 1u; step < GROUP; step = step * 2u) {
      let add = select(0u, scan[lid - min(lid, step)], lid >= step);
      workgroupBarrier();
      scan[lid] += add;
      workgroupBarrier();
    }
    if (hit) { hits[scan[lid] - 1u] = t; }
    let count = workgroupUniformLoad(&scan[GROUP - 1u]);
    for (var col = lid; col < params.dim; col += GROUP) {
      var acc = out[r * params.dim + col];
      for (var h = 0u; h < count; h++) { acc += grad[hits[h] * params.dim + col]; }
      out[r * params.dim + col] = acc;
    }
    workgroupBarrier(); // scan and hits are rewritten by the next chunk
  }
}
