// %6 = adamw_update(%0, %1, %2, %3, %4, %5) {beta1=0.9, beta2=0.99, eps=1e-8} : f32[3,64,32]  # model.ts:10:5

struct Params {
  n: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> m: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read> hypers: array<f32>;
@group(0) @binding(6) var<storage, read> clip: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const B1: f32 = 0.9;
const B2: f32 = 0.99;
const EPS: f32 = 1e-8;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  let grad = g[gid] * clip[0];
  let m1 = B1 * m[gid] + (1.0 - B1) * grad;
  let v1 = B2 * v[gid] + (1.0 - B2) * grad * grad;
  // hypers: step size, 1 / sqrt(1 - b2^t), decay
  out[gid] = p[gid] * hypers[2] - hypers[0] * m1 / (sqrt(v1) * hypers[1] + EPS);
  out[params.n + gid] = m1;
  out[2u * params.n + gid] = v1;
}
