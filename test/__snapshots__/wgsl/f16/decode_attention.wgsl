// %6 = decode_attention(%0, %1, %2, %3, %4, %5) {scale=0.125, scaling="pre_qk"} : f16[1,12,1,64]  # model.ts:10:5
enable f16;

struct Params {
  rows: u32,
  s: u32,
  d: u32,
  splits: u32,
  chunk: u32,
  heads: u32,
  row_stride: u32,
  q_row: u32,
  k_row: u32,
  v_row: u32,
  error_slot: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f16>;
@group(0) @binding(2) var<storage, read> k_cache: array<f16>;
@group(0) @binding(3) var<storage, read> v_cache: array<f16>;
@group(0) @binding(4) var<storage, read> k_new: array<f16>;
@group(0) @binding(5) var<storage, read> v_new: array<f16>;
@group(0) @binding(6) var<storage, read> pos: array<i32>;
@group(0) @binding(7) var<storage, read_write> out: array<f16>;
@group(0) @binding(8) var<storage, read_write> index_errors: array<atomic<u32>>;

// An index outside its range: kiln reads this slot back after the run and raises KILN_E011.
fn report_bad_index(position: u32, value: i32) {
  let at = params.error_slot * 4u;
  let key = bitcast<u32>(value) ^ 0x80000000u;
  atomicAdd(&index_errors[at], 1u);
  atomicMax(&index_errors[at + 1u], ~position);
  atomicMax(&index_errors[at + 2u], key);
  atomicMax(&index_errors[at + 3u], ~key);
}

const KEYS: u32 = 64u; // keys per tile, one per invocation
const Q_VEC4: u32 = 16u; // vec4s of the head dim (q in registers, zero-padded)
const V_OWN: u32 = 1u; // output dims per invocation: lid, lid + KEYS, ...
const Q_SCALE: f32 = 1.4426950408889634; // applied once as q is loaded: log2(e) for exp2, after K_SCALE and the rounding to f16
const K_SCALE: f32 = 0.3535533905932738; // applied as k is loaded (and q), each rounded to f16 then: q and k each carry sqrt(scale)
// -inf, made at run time (WGSL has no literal for it).
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
var<workgroup> scores: array<f32, KEYS>; // the tile's base-2 scores
var<workgroup> weights: array<f32, KEYS>; // and their weights 2^(score - max)

fn load_q(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(q[at]), f32(q[at + 1u]), f32(q[at + 2u]), f32(q[at + 3u]));
}
fn load_k_cache(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(k_cache[at]), f32(k_cache[at + 1u]), f32(k_cache[at + 2u]), f32(k_cache[at + 3u]));
}
fn load_k_new(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(k_new[at]), f32(k_new[at + 1u]), f32(k_new[at + 2u]), f32(k_new[at + 3u]));
}

// The row of D elements holding (b, h) row r of q, k_new or v_new, whose rows start at `offset`: r itself
// for [B, H, 1, D] operands, the head block of a packed row [B, 1, W] (B = r / heads) otherwise.
fn packed_row(r: u32, offset: u32) -> u32 {
  return (r / params.heads) * params.row_stride + offset + r % params.heads;
}

// Four dims of key j of row r from col on, as the scores take them: cache row j * rows + r below `cached` (pos), k_new at it.
fn key_at(j: u32, cached: u32, r: u32, col: u32) -> vec4<f32> {
  if (j < cached) { return kiln_round_f16(load_k_cache(j * params.rows + r, col) * K_SCALE); }
  return kiln_round_f16(load_k_new(packed_row(r, params.k_row), col) * K_SCALE);
}

// Dim c of value j of row r.
fn value_at(j: u32, cached: u32, r: u32, c: u32) -> f32 {
  if (j < cached) { return f32(v_cache[(j * params.rows + r) * params.d + c]); }
  return f32(v_new[packed_row(r, params.v_row) * params.d + c]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 64u + lid;
  let r = wid / params.splits; // the (b, h) row
  let split = wid % params.splits;
  // pos outside [0, S): reported once, then clamped so every read stays in the cache.
  let pos_value = pos[0];
  if (wid == 0u && lid == 0u && bitcast<u32>(pos_value) >= params.s) { report_bad_index(0u, pos_value); }
  let cached = u32(clamp(pos_value, 0, i32(params.s) - 1)); // keys below it are cache rows; key `cached` is the new one
  let begin = split * params.chunk;
  let end = min(begin + params.chunk, cached + 1u);

  var q_own: array<vec4<f32>, Q_VEC4>;
  for (var u = 0u; u < Q_VEC4; u = u + 1u) { q_own[u] = kiln_round_f16(load_q(packed_row(r, params.q_row), u * 4u) * K_SCALE) * Q_SCALE; }
  var acc: array<f32, V_OWN>;
  for (var v = 0u; v < V_OWN; v = v + 1u) { acc[v] = 0.0; }
  let masked = kiln_f32_bits(0xff800000u); // -inf
  var run_max = masked;
  var run_sum = 0.0;

  // begin and end are the same for the whole workgroup: the barriers below are in uniform control flow.
  for (var j0 = begin; j0 < end; j0 = j0 + KEYS) {
    let j = j0 + lid;
    var score = masked;
    if (j < end) {
      var sum4 = vec4<f32>(0.0);
      for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], key_at(j, cached, r, u * 4u), sum4); }
      score = sum4.x + sum4.y + sum4.z + sum4.w;
    }
    scores[lid] = score;
    workgroupBarrier();
    var tile_max = masked;
    for (var c = 0u; c < KEYS; c = c + 1u) { tile_max = max(tile_max, scores[c]); }
    // Key j0 is in the tile, so new_max is finite; before the first tile, the sum and accumulator are 0.
    let new_max = max(run_max, tile_max);
    let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);
    weights[lid] = select(0.0, exp2(score - new_max), j < end);
    workgroupBarrier();
    run_sum = run_sum * alpha;
    for (var v = 0u; v < V_OWN; v = v + 1u) { acc[v] = acc[v] * alpha; }
    let keys = min(KEYS, end - j0);
    for (var c = 0u; c < keys; c = c + 1u) {
      let w = weights[c];
      run_sum = run_sum + w;
      for (var v = 0u; v < V_OWN; v = v + 1u) {
        let col = lid + v * KEYS;
        if (col < params.d) { acc[v] = fma(w, value_at(j0 + c, cached, r, col), acc[v]); }
      }
    }
    run_max = new_max;
  }

  // Key pos scores its own max at worst, weight 1: run_sum >= 1.
  let inv_sum = 1.0 / run_sum;
  for (var v = 0u; v < V_OWN; v = v + 1u) {
    let col = lid + v * KEYS;
    if (col < params.d) { out[r * params.d + col] = f16(acc[v] * inv_sum); }
  }
}
