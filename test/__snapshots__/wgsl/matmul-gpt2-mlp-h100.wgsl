// %2 = matmul(%0, %1) {transposeA=false, transposeB=true} : f32[12,1024,3072]

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_m: u32,
  tiles_n: u32,
  batch_shape0: u32,
  a_batch_stride0: u32,
  b_batch_stride0: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// a is [M, K], b is [N, K]. Each workgroup computes a 128x64 output tile, each invocation
// 8x8 of it; the tiles divide M, N and K exactly, so nothing is bounds-checked.
const TILE_M = 128u;
const TILE_N = 64u;
const TILE_K = 8u;
// vec4s per k row of a_tile and b_tile: the tile's rows plus one vec4 of padding, so that the
// transposing stores of 8 k rows x 4 elements land in 32 different banks.
const A_ROW = 33u;
const B_ROW = 17u;
const A_STAGE = 264u;
const B_STAGE = 136u;
var<workgroup> a_tile: array<vec4<f32>, 528>; // [stage][k][m / 4]
var<workgroup> b_tile: array<vec4<f32>, 272>; // [stage][k][n / 4]

// Four adjacent outputs of one row.
fn write4(out_base: u32, row: u32, col: u32, v: vec4<f32>) {
  let at = out_base + row * params.n + col;
  out[at] = v.x; out[at + 1u] = v.y; out[at + 2u] = v.z; out[at + 3u] = v.w;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 128u + lid;
  let tile_n = wid % params.tiles_n;
  let tile_m = (wid / params.tiles_n) % params.tiles_m;
  let batch = wid / (params.tiles_n * params.tiles_m);
  let i0 = batch;
  let a_base = i0 * params.a_batch_stride0;
  let b_base = i0 * params.b_batch_stride0;
  let row0 = tile_m * TILE_M;
  let col0 = tile_n * TILE_N;
  // What this invocation copies of each K tile: its element at (o, kk), then more rows of the same tile.
  let a_kk = lid % 8u;
  let a_o = lid / 8u;
  let a_at = a_base + (row0 + a_o) * params.k + a_kk;
  let a_step = 16u * params.k; // to the next row this invocation loads
  let a_slot = a_kk * A_ROW + a_o / 4u;
  let a_lane = a_o % 4u;
  let b_kk = lid % 8u;
  let b_o = lid / 8u;
  let b_at = b_base + (col0 + b_o) * params.k + b_kk;
  let b_step = 16u * params.k; // to the next row this invocation loads
  let b_slot = b_kk * B_ROW + b_o / 4u;
  let b_lane = b_o % 4u;
  var a_regs: array<f32, 8>;
  var b_regs: array<f32, 4>;
  let tx = lid % 8u;
  let ty = lid / 8u;
  var acc: array<vec4<f32>, 16>;
  let k_tiles = (params.k + TILE_K - 1u) / TILE_K;
  // Step s loads K tile s into registers and stage s % 2 while the workgroup multiplies tile s - 1 from the other stage.
  for (var s = 0u; s <= k_tiles; s = s + 1u) {
    if (s < k_tiles) {
      let k0 = s * TILE_K;
      a_regs[0] = a[a_at + k0];
      a_regs[1] = a[a_at + k0 + 1u * a_step];
      a_regs[2] = a[a_at + k0 + 2u * a_step];
      a_regs[3] = a[a_at + k0 + 3u * a_step];
      a_regs[4] = a[a_at + k0 + 4u * a_step];
      a_regs[5] = a[a_at + k0 + 5u * a_step];
      a_regs[6] = a[a_at + k0 + 6u * a_step];
      a_regs[7] = a[a_at + k0 + 7u * a_step];
      b_regs[0] = b[b_at + k0];
      b_regs[1] = b[b_at + k0 + 1u * b_step];
      b_regs[2] = b[b_at + k0 + 2u * b_step];
      b_regs[3] = b[b_at + k0 + 3u * b_step];
    }
    if (s > 0u) {
      let a_frag = ((s - 1u) % 2u) * A_STAGE + ty;
      let b_frag = ((s - 1u) % 2u) * B_STAGE + tx;
      { // k row 0
        let a0 = a_tile[a_frag + 0u];
        let a1 = a_tile[a_frag + 16u];
        let b0 = b_tile[b_frag + 0u];
        let b1 = b_tile[b_frag + 8u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 1
        let a0 = a_tile[a_frag + 33u];
        let a1 = a_tile[a_frag + 49u];
        let b0 = b_tile[b_frag + 17u];
        let b1 = b_tile[b_frag + 25u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 2
        let a0 = a_tile[a_frag + 66u];
        let a1 = a_tile[a_frag + 82u];
        let b0 = b_tile[b_frag + 34u];
        let b1 = b_tile[b_frag + 42u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 3
        let a0 = a_tile[a_frag + 99u];
        let a1 = a_tile[a_frag + 115u];
        let b0 = b_tile[b_frag + 51u];
        let b1 = b_tile[b_frag + 59u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 4
        let a0 = a_tile[a_frag + 132u];
        let a1 = a_tile[a_frag + 148u];
        let b0 = b_tile[b_frag + 68u];
        let b1 = b_tile[b_frag + 76u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 5
        let a0 = a_tile[a_frag + 165u];
        let a1 = a_tile[a_frag + 181u];
        let b0 = b_tile[b_frag + 85u];
        let b1 = b_tile[b_frag + 93u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 6
        let a0 = a_tile[a_frag + 198u];
        let a1 = a_tile[a_frag + 214u];
        let b0 = b_tile[b_frag + 102u];
        let b1 = b_tile[b_frag + 110u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      { // k row 7
        let a0 = a_tile[a_frag + 231u];
        let a1 = a_tile[a_frag + 247u];
        let b0 = b_tile[b_frag + 119u];
        let b1 = b_tile[b_frag + 127u];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]); acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]); acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]); acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]); acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]); acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]); acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]); acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]); acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
    }
    if (s < k_tiles) {
      let a_stage = (s % 2u) * A_STAGE;
      let b_stage = (s % 2u) * B_STAGE;
      a_tile[a_slot + a_stage][a_lane] = a_regs[0];
      a_tile[a_slot + a_stage + 4u][a_lane] = a_regs[1];
      a_tile[a_slot + a_stage + 8u][a_lane] = a_regs[2];
      a_tile[a_slot + a_stage + 12u][a_lane] = a_regs[3];
      a_tile[a_slot + a_stage + 16u][a_lane] = a_regs[4];
      a_tile[a_slot + a_stage + 20u][a_lane] = a_regs[5];
      a_tile[a_slot + a_stage + 24u][a_lane] = a_regs[6];
      a_tile[a_slot + a_stage + 28u][a_lane] = a_regs[7];
      b_tile[b_slot + b_stage][b_lane] = b_regs[0];
      b_tile[b_slot + b_stage + 4u][b_lane] = b_regs[1];
      b_tile[b_slot + b_stage + 8u][b_lane] = b_regs[2];
      b_tile[b_slot + b_stage + 12u][b_lane] = b_regs[3];
    }
    workgroupBarrier();
  }
  let out_base = batch * params.m * params.n;
  let out_row = row0 + 4u * ty;
  let out_col = col0 + 4u * tx;
  write4(out_base, out_row + 0u, out_col + 0u, acc[0]);
  write4(out_base, out_row + 0u, out_col + 32u, acc[1]);
  write4(out_base, out_row + 1u, out_col + 0u, acc[2]);
  write4(out_base, out_row + 1u, out_col + 32u, acc[3]);
  write4(out_base, out_row + 2u, out_col + 0u, acc[4]);
  write4(out_base, out_row + 2u, out_col + 32u, acc[5]);
  write4(out_base, out_row + 3u, out_col + 0u, acc[6]);
  write4(out_base, out_row + 3u, out_col + 32u, acc[7]);
  write4(out_base, out_row + 64u, out_col + 0u, acc[8]);
  write4(out_base, out_row + 64u, out_col + 32u, acc[9]);
  write4(out_base, out_row + 65u, out_col + 0u, acc[10]);
  write4(out_base, out_row + 65u, out_col + 32u, acc[11]);
  write4(out_base, out_row + 66u, out_col + 0u, acc[12]);
  write4(out_base, out_row + 66u, out_col + 32u, acc[13]);
  write4(out_base, out_row + 67u, out_col + 0u, acc[14]);
  write4(out_base, out_row + 67u, out_col + 32u, acc[15]);
}
