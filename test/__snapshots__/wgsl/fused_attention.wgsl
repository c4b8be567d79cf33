// %3 = fused_attention(%0, %1, %2) {causal=true, scale=0.125, scaling="post"} : f32[2,4,24,64]  # model.ts:10:5

struct Params {
  l: u32,
  s: u32,
  d: u32,
  dv: u32,
  row_tiles: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const ROWS: u32 = 64u; // query rows per workgroup
const SLICES: u32 = 2u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims
const KEYS: u32 = 16u; // keys per K/V tile in workgroup memory
const Q_VEC4: u32 = 8u; // vec4s of q (and of each k row) per invocation
const O_VEC4: u32 = 8u; // vec4s of v (and of the output row) per invocation
const K_ROW: u32 = SLICES * Q_VEC4; // vec4s per staged k row: the head dim, zero-padded
const V_ROW: u32 = SLICES * O_VEC4;
const WORKGROUP: u32 = ROWS * SLICES;
const Q_SCALE: f32 = 0.125; // applied once as q is loaded (the softmax scale, "post")
// A masked score: finite, as WGSL does not promise infinities. Scores and additive mask values
// at or below MASKED_BELOW (-inf included) are masked.
const MASKED: f32 = -3.0e38;
const MASKED_BELOW: f32 = -1.0e30;
var<workgroup> k_tile: array<vec4<f32>, KEYS * K_ROW>; // key c at c * K_ROW
var<workgroup> v_tile: array<vec4<f32>, KEYS * V_ROW>;
var<workgroup> partial_dots: array<vec2<f32>, KEYS * ROWS>; // [key][row]: component s is slice s's share of q.k

fn load_q(row: u32, col: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (col + c < params.d) { x[c] = q[row * params.d + col + c]; }
  }
  return x;
}
fn load_k(row: u32, col: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (col + c < params.d) { x[c] = k[row * params.d + col + c]; }
  }
  return x;
}
fn load_v(row: u32, col: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (col + c < params.dv) { x[c] = v[row * params.dv + col + c]; }
  }
  return x;
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
  if (row_valid) {
    for (var u = 0u; u < Q_VEC4; u = u + 1u) { q_own[u] = load_q(q_row, (u * SLICES + slice) * 4u) * Q_SCALE; }
  }
  var acc: array<vec4<f32>, O_VEC4>;
  var run_max = MASKED;
  var run_sum = 0.0;
  // Causal: tiles wholly above the diagonal are never loaded; the diagonal tile masks per key.
  let key_end = min(params.s, row0 + ROWS);
  let row_end = select(0u, min(key_end, i + 1u), row_valid);

  for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {
    // Stage KEYS rows of k and v, zero past the last key.
    for (var e = lid; e < KEYS * K_ROW; e = e + WORKGROUP) {
      let j = j0 + e / K_ROW;
      var x = vec4<f32>(0.0);
      if (j < params.s) { x = load_k(kv_row0 + j, (e % K_ROW) * 4u); }
      k_tile[e] = x;
    }
    for (var e = lid; e < KEYS * V_ROW; e = e + WORKGROUP) {
      let j = j0 + e / V_ROW;
      var x = vec4<f32>(0.0);
      if (j < params.s) { x = load_v(kv_row0 + j, (e % V_ROW) * 4u); }
      v_tile[e] = x;
    }
    workgroupBarrier();

    var dots: array<f32, KEYS>;
    for (var c = 0u; c < KEYS; c = c + 1u) {
      var sum4 = vec4<f32>(0.0);
      for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], k_tile[c * K_ROW + u * SLICES + slice], sum4); }
      dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;
    }
    // Each slice holds part of every q.k: add the parts up through workgroup memory.
    for (var c = 0u; c < KEYS; c = c + 1u) { partial_dots[c * ROWS + row][slice] = dots[c]; }
    workgroupBarrier();
    for (var c = 0u; c < KEYS; c = c + 1u) { dots[c] = dot(partial_dots[c * ROWS + row], vec2<f32>(1.0)); }

    // Scores, then the online softmax: rescale what came before when the running max grows.
    var tile_max = MASKED;
    for (var c = 0u; c < KEYS; c = c + 1u) {
      let j = j0 + c;
      var score = MASKED;
      if (j < row_end) {
        score = dots[c];
      }
      dots[c] = score;
      tile_max = max(tile_max, score);
    }
    let new_max = max(run_max, tile_max);
    // Until a key is seen the accumulator and sum are zero, and the sentinel must not enter exp.
    let alpha = select(0.0, exp(run_max - new_max), run_max > MASKED_BELOW);
    run_sum = run_sum * alpha;
    for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = acc[u] * alpha; }
    for (var c = 0u; c < KEYS; c = c + 1u) {
      let p = select(0.0, exp(dots[c] - new_max), dots[c] > MASKED_BELOW);
      run_sum = run_sum + p;
      for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = fma(vec4<f32>(p), v_tile[c * V_ROW + u * SLICES + slice], acc[u]); }
    }
    run_max = new_max;
    // The next tile overwrites k_tile, v_tile (and partial_dots) only after every row is done with them.
    workgroupBarrier();
  }

  if (row_valid) {
    // A row with no kept key has run_sum 0: it writes zeros.
    let inv_sum = select(0.0, 1.0 / run_sum, run_sum > 0.0);
    for (var u = 0u; u < O_VEC4; u = u + 1u) {
      let col = (u * SLICES + slice) * 4u;
      let value = acc[u] * inv_sum;
      for (var c = 0u; c < 4u; c = c + 1u) {
        if (col + c < params.dv) { out[q_row * params.dv + col + c] = value[c]; }
      }
    }
  }
}
