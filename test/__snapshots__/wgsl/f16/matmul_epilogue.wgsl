// %3 = matmul_epilogue(%0, %1, %2) {transposeA=false, transposeB=true, expr="f16(gelu(add(f32($0), $1)))"} : f16[48,192]  # model.ts:10:5
enable f16;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_m: u32,
  tiles_n: u32,
  e1_stride0: u32,
  e1_stride1: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read> e1: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f16>;

// a is [M, K], b is [N, K]. Each workgroup computes a 64x64 output tile, each invocation
// 4x4 of it; the tiles overhang M, so the edge tiles clamp their loads and skip writes past M and N.
const TILE_M = 64u;
const TILE_N = 64u;
const TILE_K = 8u;
// vec4s per k row of a_tile and b_tile: the tile's rows plus one vec4 of padding, so that the
// transposing stores of 8 k rows x 4 elements land in 32 different banks.
const A_ROW = 17u;
const B_ROW = 17u;
const A_STAGE = 136u;
const B_STAGE = 136u;
var<workgroup> a_tile: array<vec4<f32>, 272>; // [stage][k][m / 4]
var<workgroup> b_tile: array<vec4<f32>, 272>; // [stage][k][n / 4]

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
fn kiln_round_f16(x: vec4<f32>) -> vec4<f32> {
  let subnormal = round(x * 16777216.0) * 5.9604644775390625e-8; // to a multiple of 2^-24, ties to even
  let inf = bitcast<vec4<f32>>((bitcast<vec4<u32>>(x) & vec4<u32>(0x80000000u)) | vec4<u32>(0x7f800000u));
  return select(select(quantizeToF16(x), subnormal, abs(x) < vec4<f32>(6.103515625e-5)), inf, abs(x) >= vec4<f32>(65520.0));
}
/** The same for one value. */
fn kiln_round_f16_1(x: f32) -> f32 {
  return kiln_round_f16(vec4<f32>(x)).x;
}
var<private> e1_base: u32; // e1's offset for this workgroup's batch matrix
// The chain f16(gelu(add(f32($0), $1))) at output (row, col), $0 the product's sum v.
fn epilogue(row: u32, col: u32, v: f32) -> f32 {
  let p = kiln_round_f16_1(v);
  return kiln_gelu((f32(p) + e1[e1_base + row * params.e1_stride0 + col * params.e1_stride1]));
}

// Four adjacent outputs of one row.
fn write4(out_base: u32, row: u32, col: u32, v: vec4<f32>) {
  if (row >= params.m) { return; }
  let at = out_base + row * params.n + col;
  for (var c = 0u; c < 4u; c = c + 1u) { if (col + c < params.n) { out[at + c] = f16(epilogue(row, col + c, v[c])); } }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let tile_n = wid % params.tiles_n;
  let tile_m = (wid / params.tiles_n) % params.tiles_m;
  let batch = wid / (params.tiles_n * params.tiles_m);
  let a_base = 0u;
  let b_base = 0u;
  let row0 = tile_m * TILE_M;
  let col0 = tile_n * TILE_N;
  e1_base = 0u;
  // What this invocation copies of each K tile: its element at (o, kk), then more rows of the same tile.
  let a_kk = lid % 8u;
  let a_o = lid / 8u;
  let a_at = a_base + (row0 + a_o) * params.k + a_kk;
  let a_step = 32u * params.k; // to the next row this invocation loads
  let a_last = a_base + params.m * params.k - 1u; // the matrix's last element
  let a_slot = a_kk * A_ROW + a_o / 4u;
  let a_lane = a_o % 4u;
  let b_kk = lid % 8u;
  let b_o = lid / 8u;
  let b_at = b_base + (col0 + b_o) * params.k + b_kk;
  let b_step = 32u * params.k; // to the next row this invocation loads
  let b_slot = b_kk * B_ROW + b_o / 4u;
  let b_lane = b_o % 4u;
  var a_regs: array<f32, 2>;
  var b_regs: array<f32, 2>;
  let tx = lid % 8u + 8u * ((lid / 32u) % 2u);
  let ty = (lid / 8u) % 4u + 4u * (lid / 64u);
  var acc: array<vec4<f32>, 4>;
  let k_tiles = (params.k + TILE_K - 1u) / TILE_K;
  // Step s loads K tile s into registers and stage s % 2 while the workgroup multiplies tile s - 1 from the other stage.
  for (var s = 0u; s <= k_tiles; s = s + 1u) {
    if (s < k_tiles) {
      let k0 = s * TILE_K;
      a_regs[0] = f32(a[min(a_at + k0, a_last)]);
      a_regs[1] = f32(a[min(a_at + k0 + 1u * a_step, a_last)]);
      b_regs[0] = f32(b[b_at + k0]);
      b_regs[1] = f32(b[b_at + k0 + 1u * b_step]);
    }
    if (s > 0u) {
      let a_frag = ((s - 1u) % 2u) * A_STAGE + ty;
      let b_frag = ((s - 1u) % 2u) * B_STAGE + tx;
      { // k row 0
        let a0 = a_tile[a_frag + 0u];
        let b0 = b_tile[b_frag + 0u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 1
        let a0 = a_tile[a_frag + 17u];
        let b0 = b_tile[b_frag + 17u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 2
        let a0 = a_tile[a_frag + 34u];
        let b0 = b_tile[b_frag + 34u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 3
        let a0 = a_tile[a_frag + 51u];
        let b0 = b_tile[b_frag + 51u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 4
        let a0 = a_tile[a_frag + 68u];
        let b0 = b_tile[b_frag + 68u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 5
        let a0 = a_tile[a_frag + 85u];
        let b0 = b_tile[b_frag + 85u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 6
        let a0 = a_tile[a_frag + 102u];
        let b0 = b_tile[b_frag + 102u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
      { // k row 7
        let a0 = a_tile[a_frag + 119u];
        let b0 = b_tile[b_frag + 119u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.y), b0, acc[1]);
        acc[2] = fma(vec4<f32>(a0.z), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.w), b0, acc[3]);
      }
    }
    if (s < k_tiles) {
      let a_stage = (s % 2u) * A_STAGE;
      let b_stage = (s % 2u) * B_STAGE;
      a_tile[a_slot + a_stage][a_lane] = a_regs[0];
      a_tile[a_slot + a_stage + 8u][a_lane] = a_regs[1];
      b_tile[b_slot + b_stage][b_lane] = b_regs[0];
      b_tile[b_slot + b_stage + 8u][b_lane] = b_regs[1];
    }
    workgroupBarrier();
  }
  let out_base = batch * params.m * params.n;
  let out_row = row0 + 4u * ty;
  let out_col = col0 + 4u * tx;
  write4(out_base, out_row + 0u, out_col + 0u, acc[0]);
  write4(out_base, out_row + 1u, out_col + 0u, acc[1]);
  write4(out_base, out_row + 2u, out_col + 0u, acc[2]);
  write4(out_base, out_row + 3u, out_col + 0u, acc[3]);
}
