// %2 = fused_elementwise(%0, %1) {expr="f16(gelu(add(f32($0), $1)))"} : f16[2,24,128]  # model.ts:10:5
enable f16;

struct Params {
  n: u32,
  shape0: u32,
  shape1: u32,
  shape2: u32,
  b_stride0: u32,
  b_stride1: u32,
  b_stride2: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;

fn kiln_erfc(z: f32) -> f32 { // z >= 0
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p - z * z);
}
fn kiln_erf(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let x2 = x * x; // 2 / sqrt(pi) * sum of (-1)^n x^(2n+1) / (n! (2n + 1)), n <= 6
    return x * (1.1283791670955126 + x2 * (-0.37612638903183754 + x2 * (0.11283791670955126 + x2 * (-0.026866170645131252 + x2 * (0.005223977625442188 + x2 * (-0.0008548327023450852 + x2 * 0.00012055332981789664))))));
  }
  return sign(x) * (1.0 - kiln_erfc(abs(x)));
}
fn kiln_gelu(x: f32) -> f32 {
  let z = -x * 0.7071067811865476; // Phi(x) = erfc(z) / 2
  let c = kiln_erfc(abs(z));
  return 0.5 * x * select(2.0 - c, c, z >= 0.0);
}

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
  let b_at = i0 * params.b_stride0 + i1 * params.b_stride1 + i2 * params.b_stride2;
  out[gid] = f16(kiln_gelu((f32(f32(a[gid])) + b[b_at])));
}
