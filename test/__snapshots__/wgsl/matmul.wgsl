// %2 = matmul(%0, %1) {transposeA=false, transposeB=true} : f32[2,4,24,24]  # model.ts:10:5

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_m: u32,
  tiles_n: u32,
  batch_shape0: u32,
  batch_shape1: u32,
  a_batch_stride0: u32,
  a_batch_stride1: u32,
  b_batch_stride0: u32,
  b_batch_stride1: u32,
  groups: u32,
}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// a is [M, K], b is [N, K]; tiles are stored k-major.
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * 256u + lid;
  let tile_n = wid % params.tiles_n;
  let tile_m = (wid / params.tiles_n) % params.tiles_m;
  let batch = wid / (params.tiles_n * params.tiles_m);
  var i_rest = batch;
  let i1 = i_rest % params.batch_shape1;
  i_rest = i_rest / params.batch_shape1;
  let i0 = i_rest;
  let a_base = i0 * params.a_batch_stride0 + i1 * params.a_batch_stride1;
  let b_base = i0 * params.b_batch_stride0 + i1 * params.b_batch_stride1;
  let row0 = tile_m * 64u;
  let col0 = tile_n * 64u;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < params.k; k0 = k0 + 16u) {
    for (var t = 0u; t < 4u; t = t + 1u) {
      let e = lid + t * 256u;
      {
        let kk = e % 16u;
        let mm = e / 16u;
        let index = a_base + (row0 + mm) * params.k + k0 + kk;
        let inside = row0 + mm < params.m && k0 + kk < params.k;
        a_tile[kk * 64u + mm] = select(0.0, a[select(0u, index, inside)], inside);
      }
      {
        let kk = e % 16u;
        let nn = e / 16u;
        let index = b_base + (col0 + nn) * params.k + k0 + kk;
        let inside = col0 + nn < params.n && k0 + kk < params.k;
        b_tile[kk * 64u + nn] = select(0.0, b[select(0u, index, inside)], inside);
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      var a_reg: array<f32, 4>;
      var b_reg: array<f32, 4>;
      for (var i = 0u; i < 4u; i = i + 1u) { a_reg[i] = a_tile[kk * 64u + ty * 4u + i]; }
      for (var j = 0u; j < 4u; j = j + 1u) { b_reg[j] = b_tile[kk * 64u + tx * 4u + j]; }
      for (var i = 0u; i < 4u; i = i + 1u) {
        for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  let out_base = batch * params.m * params.n;
  for (var i = 0u; i < 4u; i = i + 1u) {
    for (var j = 0u; j < 4u; j = j + 1u) {
      let row = row0 + ty * 4u + i;
      let col = col0 + tx * 4u + j;
      if (row < params.m && col < params.n) { out[out_base + row * params.n + col] = acc[i][j]; }
    }
  }
}
