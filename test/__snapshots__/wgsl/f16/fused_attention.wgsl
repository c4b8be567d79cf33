// %3 = fused_attention(%0, %1, %2) {causal=true, scale=0.125, scaling="pre_qk"} : f16[2,4,24,64]  # model.ts:10:5
enable f16;

struct Params {
  l: u32,
  s: u32,
  d: u32,
  dv: u32,
  row_tiles: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f16>;
@group(0) @binding(2) var<storage, read> k: array<f16>;
@group(0) @binding(3) var<storage, read> v: array<f16>;
@group(0) @binding(4) var<storage, read_write> out: array<f16>;

const ROWS: u32 = 64u; // query rows per workgroup
const SLICES: u32 = 2u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims
const KEYS: u32 = 16u; // keys per K/V tile in workgroup memory
const Q_VEC4: u32 = 8u; // vec4s of q (and of each k row) per invocation
const O_VEC4: u32 = 8u; // vec4s of v (and of the output row) per invocation
const K_ROW: u32 = SLICES * Q_VEC4; // vec4s per staged k row: the head dim, zero-padded
const V_ROW: u32 = SLICES * O_VEC4;
const WORKGROUP: u32 = ROWS * SLICES;
const K_FETCHES: u32 = 2u; // vec4s of each k tile one invocation loads
const V_FETCHES: u32 = 2u;
const Q_SCALE: f32 = 1.4426950408889634; // applied once as q is loaded: log2(e) for exp2, after K_SCALE and the rounding to f16
const K_SCALE: f32 = 0.3535533905932738; // applied as k is loaded (and q), each rounded to f16 then: the scores cannot overflow where the scaled ones fit: q and k each carry sqrt(scale)
// A masked score is -inf, made at run time (WGSL has no literal for it).
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
// The running max moves only when a tile's max passes it by more than this (base 2), so the
// accumulator is rescaled a few times per row rather than on most tiles (as FlashAttention-4 does);
// weights stay below 2^8, and dividing by the running sum at the end gives the same result.
const MAX_SLACK: f32 = 8.0;
var<workgroup> k_tile: array<vec4<f16>, KEYS * K_ROW>; // key c at c * K_ROW
var<workgroup> v_tile: array<vec4<f16>, KEYS * V_ROW>;
var<workgroup> partial_dots: array<vec2<f32>, KEYS * ROWS>; // [key][row]: component s is slice s's share of q.k

fn load_q(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(q[at]), f32(q[at + 1u]), f32(q[at + 2u]), f32(q[at + 3u]));
}
fn load_k(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(k[at]), f32(k[at + 1u]), f32(k[at + 2u]), f32(k[at + 3u]));
}
fn load_v(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.dv) { return vec4<f32>(0.0); }
  let at = row * params.dv + col;
  return vec4<f32>(f32(v[at]), f32(v[at + 1u]), f32(v[at + 2u]), f32(v[at + 3u]));
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 128u + lid;
  // Causal row tiles go longest first, so the short ones fill in at the end.
  let bh = wid / params.row_tiles;
  let row_tile = params.row_tiles - 1u - wid % params.row_tiles;
  let row0 = row_tile * ROWS;
  let row = lid / SLICES;
  let slice = lid % SLICES;
  let i = row0 + row;
  let row_valid = i < params.l;
  let q_row = bh * params.l + i;
  let kv_row0 = bh * params.s;

  var q_own: array<vec4<f32>, Q_VEC4>;
  for (var u = 0u; u < Q_VEC4; u = u + 1u) {
    q_own[u] = vec4<f32>(0.0);
    if (row_valid) { q_own[u] = kiln_round_f16(load_q(q_row, (u * SLICES + slice) * 4u) * K_SCALE) * Q_SCALE; }
  }
  var acc: array<vec4<f32>, O_VEC4>;
  for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = vec4<f32>(0.0); }
  let masked = kiln_f32_bits(0xff800000u); // -inf
  var run_max = masked;
  var run_sum = 0.0;
  // Causal: tiles wholly above the diagonal are never loaded; the diagonal tile masks per key.
  let key_end = min(params.s, row0 + ROWS);
  let row_end = select(0u, min(key_end, i + 1u), row_valid);

  var next_k: array<vec4<f16>, K_FETCHES>; // this invocation's share of the next tile
  var next_v: array<vec4<f16>, V_FETCHES>;
  let j_k0 = lid / K_ROW;
  next_k[0] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_k(kv_row0 + min(j_k0, params.s - 1u), (lid % K_ROW) * 4u) * K_SCALE)), j_k0 < params.s);
  let j_k1 = (lid + 1u * WORKGROUP) / K_ROW;
  next_k[1] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_k(kv_row0 + min(j_k1, params.s - 1u), ((lid + 1u * WORKGROUP) % K_ROW) * 4u) * K_SCALE)), j_k1 < params.s);
  let j_v0 = lid / V_ROW;
  next_v[0] = select(vec4<f16>(0.0), vec4<f16>(load_v(kv_row0 + min(j_v0, params.s - 1u), (lid % V_ROW) * 4u)), j_v0 < params.s);
  let j_v1 = (lid + 1u * WORKGROUP) / V_ROW;
  next_v[1] = select(vec4<f16>(0.0), vec4<f16>(load_v(kv_row0 + min(j_v1, params.s - 1u), ((lid + 1u * WORKGROUP) % V_ROW) * 4u)), j_v1 < params.s);
  for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {
    // Every invocation is done with the last tile: put the loaded one in its place.
    workgroupBarrier();
    k_tile[lid] = next_k[0];
    k_tile[lid + 1u * WORKGROUP] = next_k[1];
    v_tile[lid] = next_v[0];
    v_tile[lid + 1u * WORKGROUP] = next_v[1];
    workgroupBarrier();
    // Load the next tile: its loads are in flight while this one is worked through.
    if (j0 + KEYS < key_end) {
      let j_k0 = j0 + KEYS + lid / K_ROW;
      next_k[0] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_k(kv_row0 + min(j_k0, params.s - 1u), (lid % K_ROW) * 4u) * K_SCALE)), j_k0 < params.s);
      let j_k1 = j0 + KEYS + (lid + 1u * WORKGROUP) / K_ROW;
      next_k[1] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_k(kv_row0 + min(j_k1, params.s - 1u), ((lid + 1u * WORKGROUP) % K_ROW) * 4u) * K_SCALE)), j_k1 < params.s);
      let j_v0 = j0 + KEYS + lid / V_ROW;
      next_v[0] = select(vec4<f16>(0.0), vec4<f16>(load_v(kv_row0 + min(j_v0, params.s - 1u), (lid % V_ROW) * 4u)), j_v0 < params.s);
      let j_v1 = j0 + KEYS + (lid + 1u * WORKGROUP) / V_ROW;
      next_v[1] = select(vec4<f16>(0.0), vec4<f16>(load_v(kv_row0 + min(j_v1, params.s - 1u), ((lid + 1u * WORKGROUP) % V_ROW) * 4u)), j_v1 < params.s);
    }

    // A row that ends before this tile (past the diagonal, past L) skips its arithmetic.
    let live = j0 < row_end;
    var dots: array<f32, KEYS>;
    if (live) {
      for (var c = 0u; c < KEYS; c = c + 1u) {
        var sum4 = vec4<f32>(0.0);
        for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], vec4<f32>(k_tile[c * K_ROW + u * SLICES + slice]), sum4); }
        dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;
      }
      // Each slice holds part of every q.k: add the parts up through workgroup memory.
      for (var c = 0u; c < KEYS; c = c + 1u) { partial_dots[c * ROWS + row][slice] = dots[c]; }
    }
    workgroupBarrier();
    if (live) {
      for (var c = 0u; c < KEYS; c = c + 1u) { dots[c] = dot(partial_dots[c * ROWS + row], vec2<f32>(1.0)); }

      // Scores, then the online softmax.
      var tile_max = masked;
      for (var c = 0u; c < KEYS; c = c + 1u) {
        let j = j0 + c;
        var score = masked;
        if (j < row_end) {
          score = dots[c];
        }
        dots[c] = score;
        tile_max = max(tile_max, score);
      }
      let new_max = select(run_max, tile_max, tile_max > run_max + MAX_SLACK);
      // Until a score above -inf is seen the accumulator and sum are zero, and -inf - -inf must not enter exp2.
      let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);
      if (alpha != 1.0) {
        run_sum = run_sum * alpha;
        for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = acc[u] * alpha; }
      }
      run_max = new_max;
      for (var c = 0u; c < KEYS; c = c + 1u) {
        let p = select(0.0, exp2(dots[c] - new_max), dots[c] > masked);
        run_sum = run_sum + p;
        for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = fma(vec4<f32>(p), vec4<f32>(v_tile[c * V_ROW + u * SLICES + slice]), acc[u]); }
      }
    }
  }

  if (row_valid) {
    // A row whose every score is -inf has run_sum 0: it writes zeros (sdpa's answer).
    let inv_sum = select(0.0, 1.0 / run_sum, run_sum > 0.0);
    for (var u = 0u; u < O_VEC4; u = u + 1u) {
      let col = (u * SLICES + slice) * 4u;
      let value = acc[u] * inv_sum;
      for (var c = 0u; c < 4u; c = c + 1u) {
        if (col + c < params.dv) { out[q_row * params.dv + col + c] = f16(value[c]); }
      }
    }
  }
}
