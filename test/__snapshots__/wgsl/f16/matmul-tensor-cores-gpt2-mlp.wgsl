// %2 = matmul(%0, %1) {transposeA=false, transposeB=true} : f16[8192,3072]
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_m: u32,
  tiles_n: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;

// a is [M, K], b is [N, K], both f16, read 8 halves at a time. Each workgroup computes a
// 128x128 output tile on 8 subgroups, each 64x32 of it as 4x2 16x16 f32 result matrices; the tiles divide M, N and K.
const TILE_M = 128u;
const TILE_N = 128u;
const TILE_K = 32u;
var<workgroup> a_tile: array<f16, 5120>; // [m][k], rows padded by 8
var<workgroup> b_tile: array<f16, 5120>; // [n][k], rows padded by 8
var<workgroup> c_tile: array<f32, 2048>; // one 16x16 scratch per subgroup

// Eight halves into a tile, from one vec4<u32> read.
fn put8_a(at: u32, v: vec4<u32>) {
  let h0 = bitcast<vec2<f16>>(v.x); let h1 = bitcast<vec2<f16>>(v.y); let h2 = bitcast<vec2<f16>>(v.z); let h3 = bitcast<vec2<f16>>(v.w);
  a_tile[at] = h0.x; a_tile[at + 1u] = h0.y; a_tile[at + 2u] = h1.x; a_tile[at + 3u] = h1.y;
  a_tile[at + 4u] = h2.x; a_tile[at + 5u] = h2.y; a_tile[at + 6u] = h3.x; a_tile[at + 7u] = h3.y;
}
fn put8_b(at: u32, v: vec4<u32>) {
  let h0 = bitcast<vec2<f16>>(v.x); let h1 = bitcast<vec2<f16>>(v.y); let h2 = bitcast<vec2<f16>>(v.z); let h3 = bitcast<vec2<f16>>(v.w);
  b_tile[at] = h0.x; b_tile[at + 1u] = h0.y; b_tile[at + 2u] = h1.x; b_tile[at + 3u] = h1.y;
  b_tile[at + 4u] = h2.x; b_tile[at + 5u] = h2.y; b_tile[at + 6u] = h3.x; b_tile[at + 7u] = h3.y;
}

// Eight adjacent outputs of one row, from the scratch, each rounded to f16 once.
fn write_half8(at: u32, from: u32) {
  for (var e = 0u; e < 8u; e = e + 1u) { out[at + e] = f16(c_tile[from + e]); }
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
  // Subgroup sg computes rows sg_m * WM.. and columns sg_n * WN.. of the tile (32 invocations a subgroup,
  // numbered by local index: the lowering is chosen only where subgroups are exactly 32 wide).
  let sg = lid / 32u;
  let sg_m = sg / 4u;
  let sg_n = sg % 4u;
  var acc0: subgroup_matrix_result<f32, 16, 16>;
  var acc1: subgroup_matrix_result<f32, 16, 16>;
  var acc2: subgroup_matrix_result<f32, 16, 16>;
  var acc3: subgroup_matrix_result<f32, 16, 16>;
  var acc4: subgroup_matrix_result<f32, 16, 16>;
  var acc5: subgroup_matrix_result<f32, 16, 16>;
  var acc6: subgroup_matrix_result<f32, 16, 16>;
  var acc7: subgroup_matrix_result<f32, 16, 16>;
  var a_regs: array<vec4<u32>, 2>;
  var b_regs: array<vec4<u32>, 2>;
  var k0 = 0u;
  a_regs[0] = a[(a_base + (row0 + (lid + 0u) / 4u) * params.k + k0) / 8u + (lid + 0u) % 4u];
  a_regs[1] = a[(a_base + (row0 + (lid + 256u) / 4u) * params.k + k0) / 8u + (lid + 256u) % 4u];
  b_regs[0] = b[(b_base + (col0 + (lid + 0u) / 4u) * params.k + k0) / 8u + (lid + 0u) % 4u];
  b_regs[1] = b[(b_base + (col0 + (lid + 256u) / 4u) * params.k + k0) / 8u + (lid + 256u) % 4u];
  // Step by step: store the K tile read last step, read the next one, multiply the stored one.
  for (; k0 < params.k; k0 = k0 + TILE_K) {
    workgroupBarrier();
    put8_a(((lid + 0u) / 4u) * 40u + ((lid + 0u) % 4u) * 8u, a_regs[0]);
    put8_a(((lid + 256u) / 4u) * 40u + ((lid + 256u) % 4u) * 8u, a_regs[1]);
    put8_b(((lid + 0u) / 4u) * 40u + ((lid + 0u) % 4u) * 8u, b_regs[0]);
    put8_b(((lid + 256u) / 4u) * 40u + ((lid + 256u) % 4u) * 8u, b_regs[1]);
    workgroupBarrier();
    if (k0 + TILE_K < params.k) {
      let k0 = k0 + TILE_K;
      a_regs[0] = a[(a_base + (row0 + (lid + 0u) / 4u) * params.k + k0) / 8u + (lid + 0u) % 4u];
      a_regs[1] = a[(a_base + (row0 + (lid + 256u) / 4u) * params.k + k0) / 8u + (lid + 256u) % 4u];
      b_regs[0] = b[(b_base + (col0 + (lid + 0u) / 4u) * params.k + k0) / 8u + (lid + 0u) % 4u];
      b_regs[1] = b[(b_base + (col0 + (lid + 256u) / 4u) * params.k + k0) / 8u + (lid + 256u) % 4u];
    }
    { // k 0..15 of the tile
      let l0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 0u) * 40u + 0u, false, 40u);
      let l1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 16u) * 40u + 0u, false, 40u);
      let l2 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 32u) * 40u + 0u, false, 40u);
      let l3 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 48u) * 40u + 0u, false, 40u);
      let r0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (sg_n * 32u + 0u) * 40u + 0u, true, 40u);
      let r1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (sg_n * 32u + 16u) * 40u + 0u, true, 40u);
      acc0 = subgroupMatrixMultiplyAccumulate(l0, r0, acc0);
      acc1 = subgroupMatrixMultiplyAccumulate(l0, r1, acc1);
      acc2 = subgroupMatrixMultiplyAccumulate(l1, r0, acc2);
      acc3 = subgroupMatrixMultiplyAccumulate(l1, r1, acc3);
      acc4 = subgroupMatrixMultiplyAccumulate(l2, r0, acc4);
      acc5 = subgroupMatrixMultiplyAccumulate(l2, r1, acc5);
      acc6 = subgroupMatrixMultiplyAccumulate(l3, r0, acc6);
      acc7 = subgroupMatrixMultiplyAccumulate(l3, r1, acc7);
    }
    { // k 16..31 of the tile
      let l0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 0u) * 40u + 16u, false, 40u);
      let l1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 16u) * 40u + 16u, false, 40u);
      let l2 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 32u) * 40u + 16u, false, 40u);
      let l3 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * 64u + 48u) * 40u + 16u, false, 40u);
      let r0 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (sg_n * 32u + 0u) * 40u + 16u, true, 40u);
      let r1 = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (sg_n * 32u + 16u) * 40u + 16u, true, 40u);
      acc0 = subgroupMatrixMultiplyAccumulate(l0, r0, acc0);
      acc1 = subgroupMatrixMultiplyAccumulate(l0, r1, acc1);
      acc2 = subgroupMatrixMultiplyAccumulate(l1, r0, acc2);
      acc3 = subgroupMatrixMultiplyAccumulate(l1, r1, acc3);
      acc4 = subgroupMatrixMultiplyAccumulate(l2, r0, acc4);
      acc5 = subgroupMatrixMultiplyAccumulate(l2, r1, acc5);
      acc6 = subgroupMatrixMultiplyAccumulate(l3, r0, acc6);
      acc7 = subgroupMatrixMultiplyAccumulate(l3, r1, acc7);
    }
  }
  let out_base = batch * params.m * params.n;
  let lane = lid % 32u;
  let scratch = sg * 256u;
  subgroupMatrixStore(&c_tile, scratch, acc0, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 0u + lane / 2u) * params.n + col0 + sg_n * 32u + 0u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc1, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 0u + lane / 2u) * params.n + col0 + sg_n * 32u + 16u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc2, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 16u + lane / 2u) * params.n + col0 + sg_n * 32u + 0u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc3, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 16u + lane / 2u) * params.n + col0 + sg_n * 32u + 16u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc4, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 32u + lane / 2u) * params.n + col0 + sg_n * 32u + 0u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc5, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 32u + lane / 2u) * params.n + col0 + sg_n * 32u + 16u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc6, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 48u + lane / 2u) * params.n + col0 + sg_n * 32u + 0u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
  subgroupMatrixStore(&c_tile, scratch, acc7, false, 16u);
  workgroupBarrier();
  write_half8(out_base + (row0 + sg_m * 64u + 48u + lane / 2u) * params.n + col0 + sg_n * 32u + 16u + (lane % 2u) * 8u, scratch + lane * 8u);
  workgroupBarrier();
}
