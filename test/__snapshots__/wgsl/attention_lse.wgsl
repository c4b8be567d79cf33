// %2 = attention_lse(%0, %1) {causal=true, scale=0.125, scaling="post"} : f32[2,4,24,2]  # model.ts:10:5

struct Params {
  own_rows: u32,
  stream_rows: u32,
  d: u32,
  dv: u32,
  tiles: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Query rows are owned; keys stream past in tiles.
const ROWS: u32 = 64u; // owned rows per workgroup
const SLICES: u32 = 2u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims
const TILE: u32 = 16u; // streamed rows per tile in workgroup memory
const A_VEC4: u32 = 8u; // vec4s of a D-wide row per invocation
const B_VEC4: u32 = 8u; // vec4s of a Dv-wide row per invocation
const X_ROW: u32 = SLICES * A_VEC4; // vec4s per staged D-wide row, zero-padded
const WORKGROUP: u32 = ROWS * SLICES;
const X_FETCHES: u32 = 2u; // vec4s of each k tile one invocation loads
const A_SCALE: f32 = 0.18033688011112042; // on the owned q row: the softmax scale, "post", times log2(e) for exp2
const LOG2E: f32 = 1.4426950408889634;
// A masked score is -inf, made at run time (WGSL has no literal for it).
fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }
var<workgroup> x_tile: array<vec4<f32>, TILE * X_ROW>; // k row c at c * X_ROW
var<workgroup> partial_s: array<vec2<f32>, TILE * ROWS>; // [streamed row][owned row]: component s is slice s's share

fn load_q(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]);
}
fn load_k(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.d) { return vec4<f32>(0.0); }
  let at = row * params.d + col;
  return vec4<f32>(k[at], k[at + 1u], k[at + 2u], k[at + 3u]);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 128u + lid;
  // Causal tiles go longest first (the last query rows see the most keys).
  let bh = wid / params.tiles;
  let tile = params.tiles - 1u - wid % params.tiles;
  let own0 = tile * ROWS;
  let row = lid / SLICES;
  let slice = lid % SLICES;
  let me = own0 + row; // this invocation's query row
  let own_valid = me < params.own_rows;
  let own_at = bh * params.own_rows + min(me, params.own_rows - 1u);
  let stream0 = bh * params.stream_rows;

  var a_own: array<vec4<f32>, A_VEC4>;
  for (var u = 0u; u < A_VEC4; u = u + 1u) { a_own[u] = select(vec4<f32>(0.0), load_q(own_at, (u * SLICES + slice) * 4u) * A_SCALE, own_valid); }
  let masked = kiln_f32_bits(0xff800000u); // -inf
  var run_max = masked;
  var run_sum = 0.0;
  // Causal: key tiles past the diagonal of the last owned row are never loaded.
  let stream_begin = 0u;
  let stream_end = min(params.stream_rows, own0 + ROWS);
  let row_begin = 0u;
  let row_end = select(0u, min(stream_end, me + 1u), own_valid);

  var next_x: array<vec4<f32>, X_FETCHES>; // this invocation's share of the next tile
  if (stream_begin < stream_end) {
    let x_row0 = stream_begin + lid / X_ROW;
    next_x[0] = select(vec4<f32>(0.0), load_k(stream0 + min(x_row0, params.stream_rows - 1u), (lid % X_ROW) * 4u), x_row0 < params.stream_rows);
    let x_row1 = stream_begin + (lid + 1u * WORKGROUP) / X_ROW;
    next_x[1] = select(vec4<f32>(0.0), load_k(stream0 + min(x_row1, params.stream_rows - 1u), ((lid + 1u * WORKGROUP) % X_ROW) * 4u), x_row1 < params.stream_rows);
  }
  for (var t0 = stream_begin; t0 < stream_end; t0 = t0 + TILE) {
    // Every invocation is done with the last tile: put the loaded one in its place.
    workgroupBarrier();
    x_tile[lid] = next_x[0];
    x_tile[lid + 1u * WORKGROUP] = next_x[1];
    workgroupBarrier();
    // Load the next tile: its loads are in flight while this one is worked through.
    if (t0 + TILE < stream_end) {
      let x_row0 = t0 + TILE + lid / X_ROW;
      next_x[0] = select(vec4<f32>(0.0), load_k(stream0 + min(x_row0, params.stream_rows - 1u), (lid % X_ROW) * 4u), x_row0 < params.stream_rows);
      let x_row1 = t0 + TILE + (lid + 1u * WORKGROUP) / X_ROW;
      next_x[1] = select(vec4<f32>(0.0), load_k(stream0 + min(x_row1, params.stream_rows - 1u), ((lid + 1u * WORKGROUP) % X_ROW) * 4u), x_row1 < params.stream_rows);
    }

    // A row that cannot see this tile (causal, past the end) skips its arithmetic.
    let live = t0 < row_end && t0 + TILE > row_begin;
    var s_dots: array<f32, TILE>; // base-2 scores, before the mask
    if (live) {
      for (var c = 0u; c < TILE; c = c + 1u) {
        var sum4 = vec4<f32>(0.0);
        for (var u = 0u; u < A_VEC4; u = u + 1u) { sum4 = fma(a_own[u], x_tile[c * X_ROW + u * SLICES + slice], sum4); }
        s_dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;
      }
      // Each slice holds part of every dot product: add the parts up through workgroup memory.
      for (var c = 0u; c < TILE; c = c + 1u) {
        partial_s[c * ROWS + row][slice] = s_dots[c];
      }
    }
    workgroupBarrier();
    if (live) {
      for (var c = 0u; c < TILE; c = c + 1u) {
        s_dots[c] = dot(partial_s[c * ROWS + row], vec2<f32>(1.0));
      }
      var tile_max = masked;
      for (var c = 0u; c < TILE; c = c + 1u) {
        let n = t0 + c;
        var score = masked;
        if (n >= row_begin && n < row_end) {
          score = s_dots[c];
        }
        s_dots[c] = score;
        tile_max = max(tile_max, score);
      }
      let new_max = max(run_max, tile_max);
      if (new_max > masked) {
        // Until a score above -inf is seen the sum is zero, and -inf - -inf must not enter exp2.
        run_sum = select(0.0, run_sum * exp2(run_max - new_max), run_max > masked);
        for (var c = 0u; c < TILE; c = c + 1u) { run_sum = run_sum + select(0.0, exp2(s_dots[c] - new_max), s_dots[c] > masked); }
        run_max = new_max;
      }
    }
  }

  if (own_valid && slice == 0u) {
    // M and L, base 2; [-inf, -inf] for a row whose every score is -inf.
    out[own_at * 2u] = run_max;
    out[own_at * 2u + 1u] = select(masked, log2(run_sum), run_sum > 0.0);
  }
}
