// %2 = sample(%0, %1) {temperature=0.8, topK=200, seed=1337} : i32[2]  # model.ts:10:5

struct Params {
  v: u32,
  chunk: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> counter: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<i32>;

const GROUP: u32 = 256u;
fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }
fn kiln_uniform(seed: u32, index: u32) -> f32 {
  let h = index * 747796405u + seed * 2891336453u + 2891336453u;
  let word = ((h >> (((h >> 28u) + 4u) & 31u)) ^ h) * 277803737u;
  return f32((word >> 22u) ^ word) / 4294967296.0;
}
fn kiln_mix_seed(seed: u32, rng: u32) -> u32 {
  let state = (seed ^ (rng * 0x9e3779b9u)) * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn order_key(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}
fn key_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}
const INV_TEMPERATURE: f32 = 1.25;
const TOP_K: u32 = 200u;
const SEED: u32 = 1337u;
var<workgroup> chunk_sum: array<f32, 256>;
var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> select_state: vec3<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let base = wid * params.v;
  var row_max = kiln_f32_bits(0xff800000u);
  for (var e = lid; e < params.v; e = e + GROUP) { row_max = max(row_max, (logits[base + e] * INV_TEMPERATURE)); }
  chunk_sum[lid] = row_max;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { chunk_sum[lid] = max(chunk_sum[lid], chunk_sum[lid + stride]); }
    workgroupBarrier();
  }
  let max_all = chunk_sum[0];
  workgroupBarrier();
  // The k-th largest scaled logit, counting repeats: 8 bits of its key per pass, from the top.
  var prefix = 0u;
  var mask = 0u;
  var want = TOP_K;
  for (var round = 0u; round < 4u; round = round + 1u) {
    let shift = 24u - 8u * round;
    atomicStore(&histogram[lid], 0u);
    workgroupBarrier();
    for (var e = lid; e < params.v; e = e + GROUP) { let key = order_key((logits[base + e] * INV_TEMPERATURE)); if ((key & mask) == prefix) { atomicAdd(&histogram[(key >> shift) & 255u], 1u); } }
    workgroupBarrier();
    if (lid == 0u) {
      var above = 0u;
      var bin = 255u;
      loop {
        let count = atomicLoad(&histogram[bin]);
        if (above + count >= want || bin == 0u) { break; }
        above = above + count;
        bin = bin - 1u;
      }
      select_state = vec3<u32>(prefix | (bin << shift), mask | (255u << shift), want - above);
    }
    workgroupBarrier();
    let state = select_state;
    prefix = state.x;
    mask = state.y;
    want = state.z;
    workgroupBarrier();
  }
  let threshold = key_value(prefix);
  // Chunk lid: ids [lid * chunk, (lid + 1) * chunk), summed in order.
  let first = lid * params.chunk;
  let last = min(first + params.chunk, params.v);
  var sum = 0.0;
  for (var i = first; i < last; i = i + 1u) { let xi = (logits[base + i] * INV_TEMPERATURE); if (xi >= threshold) { sum = sum + exp(xi - max_all); } }
  chunk_sum[lid] = sum;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var c = 0u; c < GROUP; c = c + 1u) { total = total + chunk_sum[c]; }
    let seed = kiln_mix_seed(SEED, bitcast<u32>(counter[0]));
    let goal = kiln_uniform(seed, wid) * total;
    var picked = 0xffffffffu;
    var before = 0.0;
    for (var c = 0u; c < GROUP; c = c + 1u) {
      if (before + chunk_sum[c] <= goal) { before = before + chunk_sum[c]; continue; }
      var running = before;
      for (var i = c * params.chunk; i < min((c + 1u) * params.chunk, params.v); i = i + 1u) {
        let xi = (logits[base + i] * INV_TEMPERATURE);
        if (xi >= threshold) { running = running + exp(xi - max_all); }
        if (running > goal) { picked = i; break; }
      }
      break;
    }
    // Rounding that leaves the target unpassed: the last id with weight.
    if (picked == 0xffffffffu) {
      picked = 0u;
      for (var i = params.v; i > 0u; i = i - 1u) { let xi = (logits[base + i - 1u] * INV_TEMPERATURE); if (xi >= threshold && exp(xi - max_all) > 0.0) { picked = i - 1u; break; } }
    }
    out[wid] = i32(picked);
  }
}
