// %1 = dropout(%0) {p=0.1, training=true, seed=42} : f32[2,24,64]  # model.ts:10:5

struct Params {
  n: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn kiln_uniform(seed: u32, index: u32) -> f32 {
  let h = index * 747796405u + seed * 2891336453u + 2891336453u;
  let word = ((h >> (((h >> 28u) + 4u) & 31u)) ^ h) * 277803737u;
  return f32((word >> 22u) ^ word) / 4294967296.0;
}
const SEED: u32 = 42u;
const DROP_P: f32 = 0.1;
const KEEP_P: f32 = 0.9;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  let seed = SEED;
  out[gid] = select(x[gid] / KEEP_P, 0.0, kiln_uniform(seed, gid) < DROP_P);
}
