// %3 = fused_attention(%0, %1, %2) {causal=true, scale=0.125, scaling="pre_qk"} : f16[2,12,1024,64]
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;

struct Params {
  l: u32,
  s: u32,
  row_tiles: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f16>;

// q, k, v are [..., L or S, 64] f16, read 8 halves at a time. Each workgroup takes 64 query rows of one
// batch-head on 4 subgroups of 16 rows; keys go by 64 a tile.
const ROWS: u32 = 64u;
const KEYS: u32 = 64u;
const S_ROW: u32 = 68u; // floats per scratch row
const QK_SCALE: f32 = 0.3535533905932738; // sqrt(scale): q and k each carry it, rounded to f16 ("pre_qk")
const LOG2E: f32 = 1.4426950408889634; // scores to base 2, for exp2
fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }
fn kiln_round_f16(x: vec4<f32>) -> vec4<f32> {
  let subnormal = round(x * 16777216.0) * 5.9604644775390625e-8; // to a multiple of 2^-24, ties to even
  let inf = bitcast<vec4<f32>>((bitcast<vec4<u32>>(x) & vec4<u32>(0x80000000u)) | vec4<u32>(0x7f800000u));
  return select(select(quantizeToF16(x), subnormal, abs(x) < vec4<f32>(6.103515625e-5)), inf, abs(x) >= vec4<f32>(65520.0));
}
/** The same for one value. */
fn kiln_round_f16_1(x: f32) -> f32 {
  return kiln_round_f16(vec4<f32>(x)).x;
}
var<workgroup> k_tile: array<f16, 4608>; // [key][d], rows padded by 8; q's rows at the start
var<workgroup> v_tile: array<f16, 4608>; // [key][d]
var<workgroup> s_tile: array<f32, 4352>; // per subgroup [16][S_ROW]: scores, then P v
var<workgroup> p_tile: array<f16, 4608>; // per subgroup [16][72]: the weights

// Eight halves into the k tile from one vec4<u32> read, times sqrt(scale) and rounded to f16 (q and k).
fn put8_k(at: u32, x: vec4<u32>) {
  for (var w = 0u; w < 4u; w = w + 1u) {
    let h = bitcast<vec2<f16>>(x[w]);
    k_tile[at + 2u * w] = f16(kiln_round_f16_1(f32(h.x) * QK_SCALE));
    k_tile[at + 2u * w + 1u] = f16(kiln_round_f16_1(f32(h.y) * QK_SCALE));
  }
}
// Eight halves into the v tile as they are.
fn put8_v(at: u32, x: vec4<u32>) {
  for (var w = 0u; w < 4u; w = w + 1u) {
    let h = bitcast<vec2<f16>>(x[w]);
    v_tile[at + 2u * w] = h.x;
    v_tile[at + 2u * w + 1u] = h.y;
  }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 128u + lid;
  let bh = wid / params.row_tiles;
  let row_tile = params.row_tiles - 1u - wid % params.row_tiles;
  let row0 = row_tile * ROWS;
  let sg = lid / 32u; // this subgroup: rows sg * 16 .. + 15 of the tile
  let lane = lid % 32u;
  let r = lane / 2u; // this lane's row within the subgroup's 16
  let odd = lane % 2u; // and its keys (and output columns): the even ones (0) or the odd ones (1)
  let i = row0 + sg * 16u + r; // its query row
  let scratch = sg * 16u * S_ROW;
  let p_base = sg * 16u * 72u;
  let kv_row0 = bh * params.s;
  let masked = kiln_f32_bits(0xff800000u); // -inf
  
  // q: scaled, rounded to f16 and staged (in the k tile), then kept as left matrices.
  var regs_k: array<vec4<u32>, 4>;
  var regs_v: array<vec4<u32>, 4>;
  let q_r0 = row0 + (lid + 0u) / 8u;
  regs_k[0] = select(vec4<u32>(0u), q[(bh * params.l + min(q_r0, params.l - 1u)) * 8u + (lid + 0u) % 8u], q_r0 < params.l);
  let q_r1 = row0 + (lid + 128u) / 8u;
  regs_k[1] = select(vec4<u32>(0u), q[(bh * params.l + min(q_r1, params.l - 1u)) * 8u + (lid + 128u) % 8u], q_r1 < params.l);
  let q_r2 = row0 + (lid + 256u) / 8u;
  regs_k[2] = select(vec4<u32>(0u), q[(bh * params.l + min(q_r2, params.l - 1u)) * 8u + (lid + 256u) % 8u], q_r2 < params.l);
  let q_r3 = row0 + (lid + 384u) / 8u;
  regs_k[3] = select(vec4<u32>(0u), q[(bh * params.l + min(q_r3, params.l - 1u)) * 8u + (lid + 384u) % 8u], q_r3 < params.l);
  put8_k(((lid + 0u) / 8u) * 72u + ((lid + 0u) % 8u) * 8u, regs_k[0]);
  put8_k(((lid + 128u) / 8u) * 72u + ((lid + 128u) % 8u) * 8u, regs_k[1]);
  put8_k(((lid + 256u) / 8u) * 72u + ((lid + 256u) % 8u) * 8u, regs_k[2]);
  put8_k(((lid + 384u) / 8u) * 72u + ((lid + 384u) % 8u) * 8u, regs_k[3]);
  workgroupBarrier();
  let q0 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&k_tile, sg * 1152u + 0u, false, 72u);
  let q1 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&k_tile, sg * 1152u + 16u, false, 72u);
  let q2 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&k_tile, sg * 1152u + 32u, false, 72u);
  let q3 = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&k_tile, sg * 1152u + 48u, false, 72u);
  
  var o_row: array<f32, 32>; // this lane's output columns 2c + half, unnormalized
  var run_max = masked;
  var run_sum = 0.0;
  // Causal: key tiles past the workgroup's last row are never loaded; row i sees keys 0..i.
  let key_end = min(params.s, row0 + ROWS);
  let row_end = min(key_end, i + 1u);
  let k_r0 = 0u + (lid + 0u) / 8u;
  regs_k[0] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r0, params.s - 1u)) * 8u + (lid + 0u) % 8u], k_r0 < params.s);
  let k_r1 = 0u + (lid + 128u) / 8u;
  regs_k[1] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r1, params.s - 1u)) * 8u + (lid + 128u) % 8u], k_r1 < params.s);
  let k_r2 = 0u + (lid + 256u) / 8u;
  regs_k[2] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r2, params.s - 1u)) * 8u + (lid + 256u) % 8u], k_r2 < params.s);
  let k_r3 = 0u + (lid + 384u) / 8u;
  regs_k[3] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r3, params.s - 1u)) * 8u + (lid + 384u) % 8u], k_r3 < params.s);
  let v_r0 = 0u + (lid + 0u) / 8u;
  regs_v[0] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r0, params.s - 1u)) * 8u + (lid + 0u) % 8u], v_r0 < params.s);
  let v_r1 = 0u + (lid + 128u) / 8u;
  regs_v[1] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r1, params.s - 1u)) * 8u + (lid + 128u) % 8u], v_r1 < params.s);
  let v_r2 = 0u + (lid + 256u) / 8u;
  regs_v[2] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r2, params.s - 1u)) * 8u + (lid + 256u) % 8u], v_r2 < params.s);
  let v_r3 = 0u + (lid + 384u) / 8u;
  regs_v[3] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r3, params.s - 1u)) * 8u + (lid + 384u) % 8u], v_r3 < params.s);
  for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {
    workgroupBarrier(); // everyone is done with the last tiles and the scratch
    put8_k(((lid + 0u) / 8u) * 72u + ((lid + 0u) % 8u) * 8u, regs_k[0]);
    put8_k(((lid + 128u) / 8u) * 72u + ((lid + 128u) % 8u) * 8u, regs_k[1]);
    put8_k(((lid + 256u) / 8u) * 72u + ((lid + 256u) % 8u) * 8u, regs_k[2]);
    put8_k(((lid + 384u) / 8u) * 72u + ((lid + 384u) % 8u) * 8u, regs_k[3]);
    put8_v(((lid + 0u) / 8u) * 72u + ((lid + 0u) % 8u) * 8u, regs_v[0]);
    put8_v(((lid + 128u) / 8u) * 72u + ((lid + 128u) % 8u) * 8u, regs_v[1]);
    put8_v(((lid + 256u) / 8u) * 72u + ((lid + 256u) % 8u) * 8u, regs_v[2]);
    put8_v(((lid + 384u) / 8u) * 72u + ((lid + 384u) % 8u) * 8u, regs_v[3]);
    workgroupBarrier();
    if (j0 + KEYS < key_end) {
      let k_r0 = j0 + KEYS + (lid + 0u) / 8u;
      regs_k[0] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r0, params.s - 1u)) * 8u + (lid + 0u) % 8u], k_r0 < params.s);
      let k_r1 = j0 + KEYS + (lid + 128u) / 8u;
      regs_k[1] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r1, params.s - 1u)) * 8u + (lid + 128u) % 8u], k_r1 < params.s);
      let k_r2 = j0 + KEYS + (lid + 256u) / 8u;
      regs_k[2] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r2, params.s - 1u)) * 8u + (lid + 256u) % 8u], k_r2 < params.s);
      let k_r3 = j0 + KEYS + (lid + 384u) / 8u;
      regs_k[3] = select(vec4<u32>(0u), k[(kv_row0 + min(k_r3, params.s - 1u)) * 8u + (lid + 384u) % 8u], k_r3 < params.s);
      let v_r0 = j0 + KEYS + (lid + 0u) / 8u;
      regs_v[0] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r0, params.s - 1u)) * 8u + (lid + 0u) % 8u], v_r0 < params.s);
      let v_r1 = j0 + KEYS + (lid + 128u) / 8u;
      regs_v[1] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r1, params.s - 1u)) * 8u + (lid + 128u) % 8u], v_r1 < params.s);
      let v_r2 = j0 + KEYS + (lid + 256u) / 8u;
      regs_v[2] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r2, params.s - 1u)) * 8u + (lid + 256u) % 8u], v_r2 < params.s);
      let v_r3 = j0 + KEYS + (lid + 384u) / 8u;
      regs_v[3] = select(vec4<u32>(0u), v[(kv_row0 + min(v_r3, params.s - 1u)) * 8u + (lid + 384u) % 8u], v_r3 < params.s);
    }
    var s0: subgroup_matrix_result<f32, 16, 16>;
    s0 = subgroupMatrixMultiplyAccumulate(q0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 0u, true, 72u), s0);
    s0 = subgroupMatrixMultiplyAccumulate(q1, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 16u, true, 72u), s0);
    s0 = subgroupMatrixMultiplyAccumulate(q2, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 32u, true, 72u), s0);
    s0 = subgroupMatrixMultiplyAccumulate(q3, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 48u, true, 72u), s0);
    subgroupMatrixStore(&s_tile, scratch + 0u, s0, false, 68u);
    var s1: subgroup_matrix_result<f32, 16, 16>;
    s1 = subgroupMatrixMultiplyAccumulate(q0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 1152u, true, 72u), s1);
    s1 = subgroupMatrixMultiplyAccumulate(q1, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 1168u, true, 72u), s1);
    s1 = subgroupMatrixMultiplyAccumulate(q2, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 1184u, true, 72u), s1);
    s1 = subgroupMatrixMultiplyAccumulate(q3, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 1200u, true, 72u), s1);
    subgroupMatrixStore(&s_tile, scratch + 16u, s1, false, 68u);
    var s2: subgroup_matrix_result<f32, 16, 16>;
    s2 = subgroupMatrixMultiplyAccumulate(q0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 2304u, true, 72u), s2);
    s2 = subgroupMatrixMultiplyAccumulate(q1, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 2320u, true, 72u), s2);
    s2 = subgroupMatrixMultiplyAccumulate(q2, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 2336u, true, 72u), s2);
    s2 = subgroupMatrixMultiplyAccumulate(q3, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 2352u, true, 72u), s2);
    subgroupMatrixStore(&s_tile, scratch + 32u, s2, false, 68u);
    var s3: subgroup_matrix_result<f32, 16, 16>;
    s3 = subgroupMatrixMultiplyAccumulate(q0, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 3456u, true, 72u), s3);
    s3 = subgroupMatrixMultiplyAccumulate(q1, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 3472u, true, 72u), s3);
    s3 = subgroupMatrixMultiplyAccumulate(q2, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 3488u, true, 72u), s3);
    s3 = subgroupMatrixMultiplyAccumulate(q3, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, 3504u, true, 72u), s3);
    subgroupMatrixStore(&s_tile, scratch + 48u, s3, false, 68u);
    workgroupBarrier();
    // Online softmax over this lane's 32 keys of its row, in base 2; the partner lane has the other 32.
    var sc: array<f32, 32>;
    var tile_max = masked;
    for (var c = 0u; c < 32u; c = c + 1u) {
      let j = j0 + 2u * c + odd;
      sc[c] = select(masked, s_tile[scratch + r * S_ROW + 2u * c + odd] * LOG2E, j < row_end);
      tile_max = max(tile_max, sc[c]);
    }
    tile_max = max(tile_max, subgroupShuffleXor(tile_max, 1u));
    let new_max = max(run_max, tile_max);
    // Until a score above -inf is seen the output and sum are zero, and -inf - -inf must not enter exp2.
    let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);
    var tile_sum = 0.0;
    for (var c = 0u; c < 32u; c = c + 1u) {
      let p = select(0.0, exp2(sc[c] - new_max), sc[c] > masked);
      tile_sum = tile_sum + p;
      p_tile[p_base + r * 72u + 2u * c + odd] = f16(p);
    }
    run_sum = run_sum * alpha + tile_sum + subgroupShuffleXor(tile_sum, 1u);
    run_max = new_max;
    workgroupBarrier();
    var o0: subgroup_matrix_result<f32, 16, 16>;
    o0 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 0u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 0u, false, 72u), o0);
    o0 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 16u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 1152u, false, 72u), o0);
    o0 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 32u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 2304u, false, 72u), o0);
    o0 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 48u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 3456u, false, 72u), o0);
    subgroupMatrixStore(&s_tile, scratch + 0u, o0, false, 68u);
    var o1: subgroup_matrix_result<f32, 16, 16>;
    o1 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 0u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 16u, false, 72u), o1);
    o1 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 16u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 1168u, false, 72u), o1);
    o1 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 32u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 2320u, false, 72u), o1);
    o1 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 48u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 3472u, false, 72u), o1);
    subgroupMatrixStore(&s_tile, scratch + 16u, o1, false, 68u);
    var o2: subgroup_matrix_result<f32, 16, 16>;
    o2 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 0u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 32u, false, 72u), o2);
    o2 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 16u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 1184u, false, 72u), o2);
    o2 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 32u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 2336u, false, 72u), o2);
    o2 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 48u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 3488u, false, 72u), o2);
    subgroupMatrixStore(&s_tile, scratch + 32u, o2, false, 68u);
    var o3: subgroup_matrix_result<f32, 16, 16>;
    o3 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 0u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 48u, false, 72u), o3);
    o3 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 16u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 1200u, false, 72u), o3);
    o3 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 32u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 2352u, false, 72u), o3);
    o3 = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + 48u, false, 72u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, 3504u, false, 72u), o3);
    subgroupMatrixStore(&s_tile, scratch + 48u, o3, false, 68u);
    workgroupBarrier();
    for (var c = 0u; c < 32u; c = c + 1u) { o_row[c] = o_row[c] * alpha + s_tile[scratch + r * S_ROW + 2u * c + odd]; }
  }
  
  if (i < params.l) {
    let inv_sum = 1.0 / run_sum; // > 0: every row sees at least one key
    for (var c = 0u; c < 32u; c = c + 1u) { out[(bh * params.l + i) * 64u + 2u * c + odd] = f16(o_row[c] * inv_sum); }
  }
}
