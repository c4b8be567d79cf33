// %3 = layer_norm(%0, %1, %2) {eps=0.00001} : f16[2,24,64]  # model.ts:10:5
enable f16;

struct Params {
  c: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read> weight: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<f16>;
@group(0) @binding(4) var<storage, read_write> out: array<f16>;

const EPS: f32 = 0.00001;
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 64u + lid;
  let base = wid * params.c;
  var part = 0.0;
  for (var e = lid; e < params.c; e = e + 64u) { part = part + f32(x[base + e]); }
  partial[lid] = part;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  let mean = total / f32(params.c);
  var part_sq = 0.0;
  for (var e = lid; e < params.c; e = e + 64u) { let d = f32(x[base + e]) - mean; part_sq = part_sq + d * d; }
  partial[lid] = part_sq;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = (partial[lid] + partial[lid + stride]); }
    workgroupBarrier();
  }
  let total_sq = partial[0];
  workgroupBarrier();
  let rstd = inverseSqrt(total_sq / f32(params.c) + EPS);
  for (var e = lid; e < params.c; e = e + 64u) { out[base + e] = f16((f32(x[base + e]) - mean) * rstd * f32(weight[e]) + f32(bias[e])); }
}
