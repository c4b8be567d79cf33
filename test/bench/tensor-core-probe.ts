// A first look at WebGPU tensor cores on the GPU machine (issue 20), independent of kiln's codegen:
// what the adapter offers (`chromium-experimental-subgroup-matrix` and its configs), whether a
// subgroup-matrix f16 matmul compiles and is right, and how fast a few tilings of it run beside a
// plain SIMT f16 kernel. The kernels kiln ships are in codegen/wgsl/; this only chooses their shape.
//
//   bash .device/run.sh .device/tensor-core-probe.mjs [--json OUT]

import { writeFileSync } from 'node:fs';
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);

interface Variant {
  readonly name: string;
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  /** Subgroups along M and N; each covers (bm / sgm) x (bn / sgn) outputs in 16x16 result matrices. */
  readonly sgm: number;
  readonly sgn: number;
  /** b is [N, K] (x @ W^T) rather than [K, N]. */
  readonly transB: boolean;
  readonly outF16: boolean;
}

/** f16 operands read as vec4<u32> (8 halves), staged in workgroup memory as f16, multiplied on 16x16x16 subgroup matrices, f32 sums. */
function tensorCoreWgsl(v: Variant): string {
  const { bm, bn, bk, sgm, sgn, transB, outF16 } = v;
  const wm = bm / sgm;
  const wn = bn / sgn;
  const fm = wm / 16;
  const fn = wn / 16;
  const threads = sgm * sgn * 32;
  const pad = 8;
  const lda = bk + pad; // a_tile [bm][lda], k contiguous
  const ldb = transB ? bk + pad : bn + pad; // b_tile [bn][ldb] (transB) or [bk][ldb]
  const aVecs = (bm * bk) / 8; // vec4<u32> loads of a's tile
  const bVecs = (bk * bn) / 8;
  const aPer = aVecs / threads;
  const bPer = bVecs / threads;
  if (!Number.isInteger(aPer) || !Number.isInteger(bPer) || fm < 1 || fn < 1) throw new Error(`bad variant ${v.name}`);
  const accs = [...Array(fm * fn).keys()];
  const lines: string[] = [];
  lines.push('enable f16;', 'enable subgroups;', 'enable chromium_experimental_subgroup_matrix;', '');
  lines.push('struct Params { m: u32, n: u32, k: u32, tiles_n: u32 }');
  lines.push('@group(0) @binding(0) var<uniform> params: Params;');
  lines.push('@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;');
  lines.push('@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;');
  lines.push(`@group(0) @binding(3) var<storage, read_write> out: array<${outF16 ? 'f16' : 'f32'}>;`);
  lines.push(`var<workgroup> a_tile: array<f16, ${bm * lda}>;`);
  lines.push(`var<workgroup> b_tile: array<f16, ${transB ? bn * ldb : bk * ldb}>;`);
  lines.push(`var<workgroup> c_tile: array<f32, ${sgm * sgn * 256}>;`);
  lines.push('');
  lines.push('fn put8(tile: u32, at: u32, v: vec4<u32>) {');
  lines.push('  let h0 = bitcast<vec2<f16>>(v.x); let h1 = bitcast<vec2<f16>>(v.y); let h2 = bitcast<vec2<f16>>(v.z); let h3 = bitcast<vec2<f16>>(v.w);');
  lines.push('  if (tile == 0u) {');
  lines.push('    a_tile[at] = h0.x; a_tile[at + 1u] = h0.y; a_tile[at + 2u] = h1.x; a_tile[at + 3u] = h1.y;');
  lines.push('    a_tile[at + 4u] = h2.x; a_tile[at + 5u] = h2.y; a_tile[at + 6u] = h3.x; a_tile[at + 7u] = h3.y;');
  lines.push('  } else {');
  lines.push('    b_tile[at] = h0.x; b_tile[at + 1u] = h0.y; b_tile[at + 2u] = h1.x; b_tile[at + 3u] = h1.y;');
  lines.push('    b_tile[at + 4u] = h2.x; b_tile[at + 5u] = h2.y; b_tile[at + 6u] = h3.x; b_tile[at + 7u] = h3.y;');
  lines.push('  }');
  lines.push('}');
  lines.push('');
  lines.push(`@compute @workgroup_size(${threads})`);
  lines.push('fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {');
  lines.push('  let tile_n = wg.x % params.tiles_n;');
  lines.push('  let tile_m = wg.x / params.tiles_n;');
  lines.push('  let sg = lid / 32u;');
  lines.push(`  let sg_m = sg / ${sgn}u;`);
  lines.push(`  let sg_n = sg % ${sgn}u;`);
  lines.push(`  let row0 = tile_m * ${bm}u;`);
  lines.push(`  let col0 = tile_n * ${bn}u;`);
  lines.push('  let k8 = params.k / 8u;');
  lines.push('  let n8 = params.n / 8u;');
  lines.push(...accs.map((i) => `  var acc${i}: subgroup_matrix_result<f32, 16, 16>;`));
  lines.push(`  var a_regs: array<vec4<u32>, ${aPer}>;`);
  lines.push(`  var b_regs: array<vec4<u32>, ${bPer}>;`);
  // Copy slot s of this invocation: vec index e = lid + s * threads in the tile.
  const aLoad = (k0: string) => [...Array(aPer).keys()].map((s) => {
    const e = `(lid + ${s * threads}u)`;
    return `a_regs[${s}] = a[(row0 + ${e} / ${bk / 8}u) * k8 + (${k0}) / 8u + ${e} % ${bk / 8}u];`;
  });
  const bLoad = (k0: string) => [...Array(bPer).keys()].map((s) => {
    const e = `(lid + ${s * threads}u)`;
    return transB
      ? `b_regs[${s}] = b[(col0 + ${e} / ${bk / 8}u) * k8 + (${k0}) / 8u + ${e} % ${bk / 8}u];`
      : `b_regs[${s}] = b[((${k0}) + ${e} / ${bn / 8}u) * n8 + col0 / 8u + ${e} % ${bn / 8}u];`;
  });
  const aStore = [...Array(aPer).keys()].map((s) => {
    const e = `(lid + ${s * threads}u)`;
    return `put8(0u, (${e} / ${bk / 8}u) * ${lda}u + (${e} % ${bk / 8}u) * 8u, a_regs[${s}]);`;
  });
  const bStore = [...Array(bPer).keys()].map((s) => {
    const e = `(lid + ${s * threads}u)`;
    return transB
      ? `put8(1u, (${e} / ${bk / 8}u) * ${ldb}u + (${e} % ${bk / 8}u) * 8u, b_regs[${s}]);`
      : `put8(1u, (${e} / ${bn / 8}u) * ${ldb}u + (${e} % ${bn / 8}u) * 8u, b_regs[${s}]);`;
  });
  lines.push(...aLoad('0u').map((l) => '  ' + l), ...bLoad('0u').map((l) => '  ' + l));
  lines.push(`  for (var k0 = 0u; k0 < params.k; k0 = k0 + ${bk}u) {`);
  lines.push('    workgroupBarrier();');
  lines.push(...[...aStore, ...bStore].map((l) => '    ' + l));
  lines.push('    workgroupBarrier();');
  lines.push(`    if (k0 + ${bk}u < params.k) {`);
  lines.push(...[...aLoad(`k0 + ${bk}u`), ...bLoad(`k0 + ${bk}u`)].map((l) => '      ' + l));
  lines.push('    }');
  for (let kk = 0; kk < bk; kk += 16) {
    lines.push('    {');
    for (let i = 0; i < fm; i++) {
      lines.push(`      let l${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (sg_m * ${wm}u + ${i * 16}u) * ${lda}u + ${kk}u, false, ${lda}u);`);
    }
    for (let j = 0; j < fn; j++) {
      lines.push(transB
        ? `      let r${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (sg_n * ${wn}u + ${j * 16}u) * ${ldb}u + ${kk}u, true, ${ldb}u);`
        : `      let r${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, ${kk}u * ${ldb}u + sg_n * ${wn}u + ${j * 16}u, false, ${ldb}u);`);
    }
    for (let i = 0; i < fm; i++) {
      for (let j = 0; j < fn; j++) lines.push(`      acc${i * fn + j} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, acc${i * fn + j});`);
    }
    lines.push('    }');
  }
  lines.push('  }');
  // Epilogue: each 16x16 result through this subgroup's scratch, then 8 elements a lane to `out`.
  lines.push('  let lane = lid % 32u;');
  lines.push('  let scratch = sg * 256u;');
  for (let i = 0; i < fm; i++) {
    for (let j = 0; j < fn; j++) {
      lines.push(`  subgroupMatrixStore(&c_tile, scratch, acc${i * fn + j}, false, 16u);`);
      lines.push('  workgroupBarrier();');
      lines.push('  for (var e = 0u; e < 8u; e = e + 1u) {');
      lines.push('    let idx = lane * 8u + e;');
      lines.push(`    let row = row0 + sg_m * ${wm}u + ${i * 16}u + idx / 16u;`);
      lines.push(`    let col = col0 + sg_n * ${wn}u + ${j * 16}u + idx % 16u;`);
      lines.push(`    out[row * params.n + col] = ${outF16 ? 'f16(c_tile[scratch + idx])' : 'c_tile[scratch + idx]'};`);
      lines.push('  }');
      lines.push('  workgroupBarrier();');
    }
  }
  lines.push('}');
  return lines.join('\n');
}

/** A plain SIMT f16 matmul for the ratio: 64x64 tiles, 4x4 an invocation, f32 sums (b is [K, N]). */
function simtWgsl(): string {
  return `enable f16;
struct Params { m: u32, n: u32, k: u32, tiles_n: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> out: array<f16>;
var<workgroup> at: array<f32, ${64 * 16}>;
var<workgroup> bt: array<f32, ${64 * 16}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row0 = (wg.x / params.tiles_n) * 64u;
  let col0 = (wg.x % params.tiles_n) * 64u;
  let tx = lid % 16u; let ty = lid / 16u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < params.k; k0 = k0 + 16u) {
    for (var s = 0u; s < 4u; s = s + 1u) {
      let e = lid + s * 256u;
      at[(e % 16u) * 64u + e / 16u] = f32(a[(row0 + e / 16u) * params.k + k0 + e % 16u]);
      bt[(e / 64u) * 64u + e % 64u] = f32(b[(k0 + e / 64u) * params.n + col0 + e % 64u]);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      for (var i = 0u; i < 4u; i = i + 1u) {
        let av = at[kk * 64u + ty * 4u + i];
        for (var j = 0u; j < 4u; j = j + 1u) { acc[i * 4u + j] = fma(av, bt[kk * 64u + tx * 4u + j], acc[i * 4u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i = i + 1u) {
    for (var j = 0u; j < 4u; j = j + 1u) { out[(row0 + ty * 4u + i) * params.n + col0 + tx * 4u + j] = f16(acc[i * 4u + j]); }
  }
}`;
}

function f16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (exp <= 0) return sign; // the probe's inputs are never this small
  if (exp >= 31) return sign | 0x7c00;
  let h = sign | (exp << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
  return h;
}

function f16Value(h: number): number {
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  const v = exp === 0 ? mant * 2 ** -24 : exp === 31 ? Infinity : (1 + mant / 1024) * 2 ** (exp - 15);
  return h & 0x8000 ? -v : v;
}

async function main() {
  const args = process.argv.slice(2);
  const jsonAt = args.indexOf('--json');
  const report: Record<string, unknown> = {};
  const gpu = create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('no adapter');
  const info = adapter.info as unknown as Record<string, unknown>;
  const infoCopy: Record<string, unknown> = {};
  for (const key of ['vendor', 'architecture', 'device', 'description', 'subgroupMinSize', 'subgroupMaxSize', 'subgroupMatrixConfigs', 'isFallbackAdapter']) infoCopy[key] = info[key];
  report.adapter = infoCopy;
  report.features = [...adapter.features].sort();
  console.log('adapter', JSON.stringify(infoCopy));
  console.log('features', JSON.stringify(report.features));
  const want = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'].filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({
    requiredFeatures: want as GPUFeatureName[],
    requiredLimits: { maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize, maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize, maxComputeInvocationsPerWorkgroup: 1024 },
  });
  device.addEventListener('uncapturederror', (e) => console.log('uncaptured:', (e as GPUUncapturedErrorEvent).error.message));
  report.deviceFeatures = [...device.features].sort();

  const variants: Variant[] = [];
  for (const [bm, bn, sgm, sgn] of [[128, 128, 2, 4], [128, 128, 4, 2], [128, 64, 2, 2], [64, 64, 2, 2], [128, 256, 2, 4]] as const) {
    for (const bk of [32, 64]) {
      if (bm * (bk + 8) * 2 + bk * (bn + 8) * 2 + sgm * sgn * 1024 > adapter.limits.maxComputeWorkgroupStorageSize) continue;
      variants.push({ name: `tc ${bm}x${bn}x${bk} sg${sgm}x${sgn}`, bm, bn, bk, sgm, sgn, transB: false, outF16: true });
    }
  }
  variants.push({ name: 'tc 128x128x32 sg2x4 transB', bm: 128, bn: 128, bk: 32, sgm: 2, sgn: 4, transB: true, outF16: true });
  variants.push({ name: 'tc 128x128x32 sg2x4 f32out', bm: 128, bn: 128, bk: 32, sgm: 2, sgn: 4, transB: false, outF16: false });

  const hasTc = device.features.has('chromium-experimental-subgroup-matrix');
  const results: Record<string, unknown>[] = [];
  report.results = results;

  async function runCase(name: string, code: string, m: number, n: number, k: number, tile: [number, number], threads: number, outF16: boolean, transB: boolean, check: boolean, reps: number) {
    const rec: Record<string, unknown> = { name, m, n, k };
    results.push(rec);
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code });
    const ci = await module.getCompilationInfo();
    const msgs = ci.messages.filter((x) => x.type === 'error').map((x) => `${x.lineNum}:${x.linePos} ${x.message}`);
    let pipeline: GPUComputePipeline | undefined;
    try {
      pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    } catch (e) {
      msgs.push(String((e as Error).message));
    }
    const err = await device.popErrorScope();
    if (err) msgs.push(err.message);
    if (msgs.length || !pipeline) {
      rec.error = msgs.join(' | ').slice(0, 2000);
      console.log(name, 'FAILED', rec.error);
      if (name.includes('128x128x32 sg2x4') && !name.includes('f32')) console.log(code);
      return;
    }
    // Inputs: small integers / 8 are exact in f16 and their products and sums of up to 2^11 terms exact in f32.
    const aH = new Uint16Array(m * k);
    const bH = new Uint16Array(k * n);
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) % 17 - 8;
    for (let i = 0; i < aH.length; i++) aH[i] = f16Bits(rnd() / 8);
    for (let i = 0; i < bH.length; i++) bH[i] = f16Bits(rnd() / 8);
    const mk = (data: ArrayBufferView, usage: number) => {
      const buf = device.createBuffer({ size: Math.ceil(data.byteLength / 16) * 16, usage: usage | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
      return buf;
    };
    const aBuf = mk(aH, GPUBufferUsage.STORAGE);
    const bBuf = mk(bH, GPUBufferUsage.STORAGE);
    const outBytes = m * n * (outF16 ? 2 : 4);
    const outBuf = device.createBuffer({ size: Math.ceil(outBytes / 16) * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const tilesN = n / tile[1];
    const groups = (m / tile[0]) * tilesN;
    const params = mk(new Uint32Array([m, n, k, tilesN]), GPUBufferUsage.UNIFORM);
    const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [params, aBuf, bBuf, outBuf].map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const dispatch = (count: number) => {
      const enc = device.createCommandEncoder();
      for (let r = 0; r < count; r++) {
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline!);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(groups);
        pass.end();
      }
      device.queue.submit([enc.finish()]);
    };
    device.pushErrorScope('validation');
    dispatch(1);
    await device.queue.onSubmittedWorkDone();
    const runErr = await device.popErrorScope();
    if (runErr) { rec.error = runErr.message; console.log(name, 'RUN FAILED', runErr.message); return; }
    if (check) {
      const read = device.createBuffer({ size: outBuf.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const enc = device.createCommandEncoder();
      enc.copyBufferToBuffer(outBuf, 0, read, 0, outBuf.size);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const got = outF16 ? new Uint16Array(read.getMappedRange().slice(0, outBytes)) : new Float32Array(read.getMappedRange().slice(0, outBytes));
      let bad = 0;
      let worst = 0;
      const av = Float64Array.from(aH, f16Value);
      const bv = Float64Array.from(bH, f16Value);
      for (let r = 0; r < m; r += Math.max(1, m / 64)) {
        for (let c = 0; c < n; c++) {
          let s = 0;
          for (let kk = 0; kk < k; kk++) s += av[r * k + kk]! * (transB ? bv[c * k + kk]! : bv[kk * n + c]!);
          const want = outF16 ? f16Value(f16Bits(s)) : s;
          const g = outF16 ? f16Value(got[r * n + c]!) : got[r * n + c]!;
          const d = Math.abs(g - want);
          worst = Math.max(worst, d);
          if (d > 0) bad++;
        }
      }
      rec.mismatches = bad;
      rec.maxAbsDiff = worst;
      read.destroy();
    }
    // Timing: warm up, then `reps` dispatches in one submission, three times; the best.
    dispatch(3);
    await device.queue.onSubmittedWorkDone();
    let best = Infinity;
    for (let t = 0; t < 3; t++) {
      const t0 = performance.now();
      dispatch(reps);
      await device.queue.onSubmittedWorkDone();
      best = Math.min(best, (performance.now() - t0) / reps);
    }
    rec.ms = best;
    rec.tflops = (2 * m * n * k) / (best * 1e-3) / 1e12;
    console.log(name, `${m}x${n}x${k}`, check ? `mismatches ${rec.mismatches} max|d| ${rec.maxAbsDiff}` : '', `${best.toFixed(3)} ms ${(rec.tflops as number).toFixed(1)} TFLOP/s`);
    for (const buf of [aBuf, bBuf, outBuf, params]) buf.destroy();
  }

  await runCase('simt f16 64x64', simtWgsl(), 512, 512, 512, [64, 64], 256, true, false, true, 20);
  await runCase('simt f16 64x64', simtWgsl(), 4096, 4096, 4096, [64, 64], 256, true, false, false, 10);
  if (hasTc) {
    for (const v of variants) {
      const code = tensorCoreWgsl(v);
      await runCase(v.name, code, 512, 512, 512, [v.bm, v.bn], v.sgm * v.sgn * 32, v.outF16, v.transB, true, 20);
      if (!(results.at(-1) as { error?: string }).error) await runCase(v.name, code, 4096, 4096, 4096, [v.bm, v.bn], v.sgm * v.sgn * 32, v.outF16, v.transB, false, 20);
    }
    // GPT-2's MLP product at B8 T1024: [8192, 768] @ [768, 3072]
    const v = variants[0]!;
    await runCase(v.name + ' gpt2-mlp', tensorCoreWgsl(v), 8192, 3072, 768, [v.bm, v.bn], 256, true, false, false, 20);
  } else {
    console.log('no chromium-experimental-subgroup-matrix on this device');
  }
  if (jsonAt >= 0) writeFileSync(args[jsonAt + 1]!, JSON.stringify(report, null, 2));
  device.destroy();
}

await main();
