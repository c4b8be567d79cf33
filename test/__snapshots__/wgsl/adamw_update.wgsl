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
@group(0) @binding(6) var<storage, read> scalars: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const B1: f32 = 0.9;
const ONE_MINUS_B1: f32 = 0.09999999999999998;
const B2: f32 = 0.99;
const ONE_MINUS_B2: f32 = 0.010000000000000009;
const EPS: f32 = 1e-8;
fn kiln_one_minus_pow(b: f32, one_minus_b: f32, t: u32) -> f32 {
  var p = b;
  var s = one_minus_b;
  var result_p = 1.0;
  var result_s = 0.0;
  for (var n = t; n != 0u; n = n >> 1u) {
    if ((n & 1u) != 0u) {
      result_s = result_s + result_p * s;
      result_p = result_p * p;
    }
    s = s + p * s;
    p = p * p;
  }
  return result_s;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  if (gid >= params.n) { return; }
  // hypers: lr, decay; scalars: step t, gradient scale, skip
  let t = u32(scalars[0]);
  var p1 = p[gid];
  var m1 = m[gid];
  var v1 = v[gid];
  if (scalars[2] == 0.0) {
    let grad = g[gid] * scalars[1];
    m1 = B1 * m1 + (1.0 - B1) * grad;
    v1 = B2 * v1 + (1.0 - B2) * grad * grad;
    let step_size = hypers[0] / kiln_one_minus_pow(B1, ONE_MINUS_B1, t);
    p1 = p1 * hypers[1] - step_size * m1 / (sqrt(v1) / sqrt(kiln_one_minus_pow(B2, ONE_MINUS_B2, t)) + EPS);
  }
  out[gid] = p1;
  out[params.n + gid] = m1;
  out[2u * params.n + gid] = v1;
}
