// %3 = sdpa(%0, %1, %2) {isCausal=true, scale=null, dropoutP=0} : f32[2,4,24,16]  # model.ts:10:5

struct Params {
  l: u32,
  s: u32,
  d: u32,
  dv: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const SCALE: f32 = 0.25;
const MASKED: f32 = -3.4028234663852886e+38;
const MASKED_BELOW: f32 = -1e+38; // scores at or below this are masked
var<workgroup> q_row: array<f32, 16>;
var<workgroup> scores: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 64u + lid;
  let i = wid % params.l;
  let bh = wid / params.l;
  let kv_row = bh * params.s;
  for (var c = lid; c < params.d; c = c + 64u) { q_row[c] = q[wid * params.d + c]; }
  workgroupBarrier();
  let key_end = min(params.s, i + 1u);
  var run_max = MASKED;
  var run_sum = 0.0;
  var acc: array<f32, 1>;
  for (var j0 = 0u; j0 < key_end; j0 = j0 + 64u) {
    let j = j0 + lid;
    var score = MASKED;
    if (j < key_end) {
      var dot = 0.0;
      for (var c = 0u; c < params.d; c = c + 1u) { dot = fma(q_row[c], k[(kv_row + j) * params.d + c], dot); }
      score = dot * SCALE;
    }
    // An additive -inf (or anything at the sentinel) counts as masked.
    scores[lid] = select(MASKED, score, score > MASKED_BELOW);
    workgroupBarrier();
    let chunk = min(64u, key_end - j0);
    var chunk_max = MASKED;
    for (var t = 0u; t < chunk; t = t + 1u) { chunk_max = max(chunk_max, scores[t]); }
    let new_max = max(run_max, chunk_max);
    let alpha = select(0.0, exp(run_max - new_max), run_max > MASKED_BELOW);
    run_sum = run_sum * alpha;
    for (var u = 0u; u < 1u; u = u + 1u) { acc[u] = acc[u] * alpha; }
    for (var t = 0u; t < chunk; t = t + 1u) {
      let st = scores[t];
      if (st > MASKED_BELOW) {
        let p = exp(st - new_max);
        run_sum = run_sum + p;
        let weight = p;
        let v_row = (kv_row + j0 + t) * params.dv;
        for (var u = 0u; u < 1u; u = u + 1u) {
          let col = lid + u * 64u;
          if (col < params.dv) { acc[u] = fma(weight, v[v_row + col], acc[u]); }
        }
      }
    }
    run_max = new_max;
    workgroupBarrier();
  }
  for (var u = 0u; u < 1u; u = u + 1u) {
    let col = lid + u * 64u;
    if (col < params.dv) { out[wid * params.dv + col] = select(0.0, acc[u] / run_sum, run_sum > 0.0); }
  }
}
