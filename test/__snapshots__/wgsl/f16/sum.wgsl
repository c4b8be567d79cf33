// %1 = sum(%0) {dims=[0,1], keepdim=false} : f16[64]  # model.ts:10:5
enable f16;

struct Params {
  count: u32,
  kept_shape0: u32,
  kept_stride0: u32,
  red_shape0: u32,
  red_stride0: u32,
  inner: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read_write> out: array<f16>;

var<workgroup> lanes: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let tile = wid % 1u;
  let col = tile * 64u + lid % 64u;
  let lane = lid / 64u;
  let outer = wid / 1u;
  let base = min(col, params.inner - 1u);
  var acc: f32 = 0.0;
  for (var e = lane; e < params.count; e = e + 4u) {
    let r0 = e;
    let at = base + r0 * params.red_stride0;
    acc = (acc + f32(x[at]));
  }
  lanes[lid] = acc;
  workgroupBarrier();
  if (lane == 0u && col < params.inner) {
    var total = acc;
    for (var l = 1u; l < 4u; l = l + 1u) { total = (total + lanes[lid + l * 64u]); }
    out[outer * params.inner + col] = f16(total);
  }
}
