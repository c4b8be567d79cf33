// %6 = fused_attention_backward(%0, %1, %2, %3, %4, %5) {causal=true, scale=0.125, scaling="pre_qk", wrt="kv"} : f16[2,4,24,128]  # model.ts:10:5
enable f16;

struct Params {
  own_rows: u32,
  stream_rows: u32,
  d: u32,
  dv: u32,
  tiles: u32,
  out_row: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f16>;
@group(0) @binding(2) var<storage, read> k: array<f16>;
@group(0) @binding(3) var<storage, read> v: array<f16>;
@group(0) @binding(4) var<storage, read> grad_out: array<f16>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f16>;

// Key rows are owned; queries stream past in tiles.
const ROWS: u32 = 64u; // owned rows per workgroup
const SLICES: u32 = 2u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims
const TILE: u32 = 8u; // streamed rows per tile in workgroup memory
const A_VEC4: u32 = 8u; // vec4s of a D-wide row per invocation
const B_VEC4: u32 = 8u; // vec4s of a Dv-wide row per invocation
const X_ROW: u32 = SLICES * A_VEC4; // vec4s per staged D-wide row, zero-padded
const Y_ROW: u32 = SLICES * B_VEC4;
const WORKGROUP: u32 = ROWS * SLICES;
const X_FETCHES: u32 = 1u; // vec4s of each q tile one invocation loads
const Y_FETCHES: u32 = 1u;
const A_SCALE: f32 = 1.4426950408889634; // on the owned k row: log2(e) for exp2, after X_SCALE and the rounding to f16
const X_SCALE: f32 = 0.3535533905932738; // on the streamed q rows (and the owned one), each rounded to f16 then, as the forward does: q and k each carry sqrt(scale)
const ACC_SCALE: f32 = 0.3535533905932738; // dS times the scale, less what the staged q rows carry
const LOG2E: f32 = 1.4426950408889634;
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
var<workgroup> x_tile: array<vec4<f16>, TILE * X_ROW>; // q row c at c * X_ROW
var<workgroup> y_tile: array<vec4<f16>, TILE * Y_ROW>; // grad_out
var<workgroup> lse_tile: array<vec2<f32>, TILE>; // M and L of each streamed row, base 2
var<workgroup> delta_tile: array<f32, TILE>;
var<workgroup> partial_s: array<vec2<f32>, TILE * ROWS>; // [streamed row][owned row]: component s is slice s's share
var<workgroup> partial_dp: array<vec2<f32>, TILE * ROWS>; // [streamed row][owned row]: component s is slice s's share

fn load_k(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(k[at]), f32(k[at + 1u]), f32(k[at + 2u]), f32(k[at + 3u]));
}
fn load_q(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(f32(q[at]), f32(q[at + 1u]), f32(q[at + 2u]), f32(q[at + 3u]));
}
fn load_v(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.dv) { return vec4<f32>(0.0); }
  let at = row * params.dv + col;
  return vec4<f32>(f32(v[at]), f32(v[at + 1u]), f32(v[at + 2u]), f32(v[at + 3u]));
}
fn load_grad_out(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.dv) { return vec4<f32>(0.0); }
  let at = row * params.dv + col;
  return vec4<f32>(f32(grad_out[at]), f32(grad_out[at + 1u]), f32(grad_out[at + 2u]), f32(grad_out[at + 3u]));
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 128u + lid;
  // Causal tiles go longest first (the first keys are seen by the most queries).
  let bh = wid / params.tiles;
  let tile = wid % params.tiles;
  let own0 = tile * ROWS;
  let row = lid / SLICES;
  let slice = lid % SLICES;
  let me = own0 + row; // this invocation's key row
  let own_valid = me < params.own_rows;
  let own_at = bh * params.own_rows + min(me, params.own_rows - 1u);
  let stream0 = bh * params.stream_rows;

  var a_own: array<vec4<f32>, A_VEC4>;
  for (var u = 0u; u < A_VEC4; u = u + 1u) { a_own[u] = select(vec4<f32>(0.0), kiln_round_f16(load_k(own_at, (u * SLICES + slice) * 4u) * X_SCALE) * A_SCALE, own_valid); }
  var b_own: array<vec4<f32>, B_VEC4>;
  for (var u = 0u; u < B_VEC4; u = u + 1u) { b_own[u] = select(vec4<f32>(0.0), load_v(own_at, (u * SLICES + slice) * 4u), own_valid); }
  let masked = kiln_f32_bits(0xff800000u); // -inf
  var acc_x: array<vec4<f32>, A_VEC4>;
  for (var u = 0u; u < A_VEC4; u = u + 1u) { acc_x[u] = vec4<f32>(0.0); }
  var acc_y: array<vec4<f32>, B_VEC4>;
  for (var u = 0u; u < B_VEC4; u = u + 1u) { acc_y[u] = vec4<f32>(0.0); }
  // Causal: query tiles above the first owned key are never loaded; a key is seen from its own query on.
  let stream_begin = min(own0, params.stream_rows);
  let stream_end = params.stream_rows;
  let row_begin = me;
  let row_end = select(0u, stream_end, own_valid);

  var next_x: array<vec4<f16>, X_FETCHES>; // this invocation's share of the next tile
  var next_y: array<vec4<f16>, Y_FETCHES>;
  var next_lse = vec2<f32>(0.0);
  var next_delta = 0.0;
  if (stream_begin < stream_end) {
    let x_row0 = stream_begin + lid / X_ROW;
    next_x[0] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_q(stream0 + min(x_row0, params.stream_rows - 1u), (lid % X_ROW) * 4u) * X_SCALE)), x_row0 < params.stream_rows);
    let y_row0 = stream_begin + lid / Y_ROW;
    next_y[0] = select(vec4<f16>(0.0), vec4<f16>(load_grad_out(stream0 + min(y_row0, params.stream_rows - 1u), (lid % Y_ROW) * 4u)), y_row0 < params.stream_rows);
    let scalar_at = stream0 + min(stream_begin + lid, params.stream_rows - 1u);
    next_lse = vec2<f32>(lse[2u * scalar_at], lse[2u * scalar_at + 1u]);
    next_delta = delta[scalar_at];
  }
  for (var t0 = stream_begin; t0 < stream_end; t0 = t0 + TILE) {
    // Every invocation is done with the last tile: put the loaded one in its place.
    workgroupBarrier();
    x_tile[lid] = next_x[0];
    y_tile[lid] = next_y[0];
    if (lid < TILE) { lse_tile[lid] = next_lse; delta_tile[lid] = next_delta; }
    workgroupBarrier();
    // Load the next tile: its loads are in flight while this one is worked through.
    if (t0 + TILE < stream_end) {
      let x_row0 = t0 + TILE + lid / X_ROW;
      next_x[0] = select(vec4<f16>(0.0), vec4<f16>(kiln_round_f16(load_q(stream0 + min(x_row0, params.stream_rows - 1u), (lid % X_ROW) * 4u) * X_SCALE)), x_row0 < params.stream_rows);
      let y_row0 = t0 + TILE + lid / Y_ROW;
      next_y[0] = select(vec4<f16>(0.0), vec4<f16>(load_grad_out(stream0 + min(y_row0, params.stream_rows - 1u), (lid % Y_ROW) * 4u)), y_row0 < params.stream_rows);
      let scalar_at = stream0 + min(t0 + TILE + lid, params.stream_rows - 1u);
      next_lse = vec2<f32>(lse[2u * scalar_at], lse[2u * scalar_at + 1u]);
      next_delta = delta[scalar_at];
    }

    // A row that cannot see this tile (causal, past the end) skips its arithmetic.
    let live = t0 < row_end && t0 + TILE > row_begin;
    var s_dots: array<f32, TILE>; // base-2 scores, before the mask
    var dp_dots: array<f32, TILE>; // dP = grad_out . v
    if (live) {
      for (var c = 0u; c < TILE; c = c + 1u) {
        var sum4 = vec4<f32>(0.0);
        for (var u = 0u; u < A_VEC4; u = u + 1u) { sum4 = fma(a_own[u], vec4<f32>(x_tile[c * X_ROW + u * SLICES + slice]), sum4); }
        s_dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;
      }
      for (var c = 0u; c < TILE; c = c + 1u) {
        var sum4 = vec4<f32>(0.0);
        for (var u = 0u; u < B_VEC4; u = u + 1u) { sum4 = fma(b_own[u], vec4<f32>(y_tile[c * Y_ROW + u * SLICES + slice]), sum4); }
        dp_dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;
      }
      // Each slice holds part of every dot product: add the parts up through workgroup memory.
      for (var c = 0u; c < TILE; c = c + 1u) {
        partial_s[c * ROWS + row][slice] = s_dots[c];
        partial_dp[c * ROWS + row][slice] = dp_dots[c];
      }
    }
    workgroupBarrier();
    if (live) {
      for (var c = 0u; c < TILE; c = c + 1u) {
        s_dots[c] = dot(partial_s[c * ROWS + row], vec2<f32>(1.0));
        dp_dots[c] = dot(partial_dp[c * ROWS + row], vec2<f32>(1.0));
      }
      for (var c = 0u; c < TILE; c = c + 1u) {
        let n = t0 + c;
        var p = 0.0; // the probability, recomputed
        if (n >= row_begin && n < row_end) {
          var score = masked;
          score = s_dots[c];
          p = select(0.0, exp2((score - lse_tile[c].x) - lse_tile[c].y), score > masked); // 0 where every score of the row is -inf (emptyRows "zero")
        }
        let ds = p * (dp_dots[c] - delta_tile[c]); // dS = P * (dP - delta)
        for (var u = 0u; u < A_VEC4; u = u + 1u) { acc_x[u] = fma(vec4<f32>(ds), vec4<f32>(x_tile[c * X_ROW + u * SLICES + slice]), acc_x[u]); }
        for (var u = 0u; u < B_VEC4; u = u + 1u) { acc_y[u] = fma(vec4<f32>(p), vec4<f32>(y_tile[c * Y_ROW + u * SLICES + slice]), acc_y[u]); }
      }
    }
  }

  if (own_valid) {
    for (var u = 0u; u < A_VEC4; u = u + 1u) {
      let col = (u * SLICES + slice) * 4u;
      let value = acc_x[u] * ACC_SCALE;
      for (var c = 0u; c < 4u; c = c + 1u) {
        if (col + c < params.d) { out[own_at * params.out_row + col + c] = f16(value[c]); }
      }
    }
    for (var u = 0u; u < B_VEC4; u = u + 1u) {
      let col = (u * SLICES + slice) * 4u;
      let value = acc_y[u];
      for (var c = 0u; c < 4u; c = c + 1u) {
        if (col + c < params.dv) { out[own_at * params.out_row + params.d + col + c] = f16(value[c]); }
      }
    }
  }
}
