// The catalog's codes met on a WebGPU device (see errors.test.ts for the rest): a lost device, a
// tensor larger than any GPU buffer, a kernel WebGPU rejects, f16 on a device without shader-f16 (this
// file runs on SwiftShader, which has none).

import { afterAll, describe, expect, it } from 'vitest';
import { type Kernel, lowerGraph } from '../codegen/index.ts';
import { F, compile, tensor } from '../index.ts';
import { Graph } from '../ir/graph.ts';
import { getDevice, pipelineFor, releaseDevice } from '../runtime/webgpu/index.ts';
import { CATALOG, NANOGPT, TINY, caught, kiln, locOf } from './error-catalog.ts';
import { FloatMask, HalfLinear, HugeOuter } from './fixtures/errors/models.ts';

/** Where Debian's chromium package puts SwiftShader, the device this file's tests assume. */
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

afterAll(releaseDevice);

describe('each code met on a WebGPU device gives one exact line', () => {
  it(`KILN_E008 for ${CATALOG.KILN_E008}`, async () => {
    const model = compile(new FloatMask(), { backend: 'webgpu' });
    const [x, mask] = [tensor([1, 2]), F.eq(tensor([1, 0]), 0)];
    await model(x, mask);
    (await getDevice()).device.destroy();
    const message = await caught('KILN_E008', async () => ((await model(x, mask)) as { data(): Promise<unknown> }).data());
    expect(message).toBe('KILN_E008 the WebGPU device was lost (destroyed): device was destroyed; the next call opens a new device (compiled models move to it and upload their weights again)');
    // As it says: the same compiled model runs again, on a new device.
    const again = (await model(x, mask)) as { data(): Promise<Float32Array> };
    expect([...(await again.data())]).toEqual([1, 0]);
    await releaseDevice();
  });

  it(`KILN_E009 for ${CATALOG.KILN_E009}`, async () => {
    const n = 2 ** 20;
    const message = await caught('KILN_E009', () => compile(new HugeOuter(), { backend: 'webgpu' })(F.zeros([n, 1]), F.zeros([1, n])));
    // The limit is the adapter's own (SwiftShader: maxBufferSize of 1.0 GiB).
    expect(message.replace(/this GPU's \w+ of [\d.]+ [KMG]iB/, "this GPU's LIMIT")).toBe(
      'KILN_E009 test/fixtures/errors/models.ts:30:16: %2 = matmul(%0, %1) {transposeA=false, transposeB=false} : f32[1048576,1048576] needs 4.0 TiB, more than this GPU\'s LIMIT; use a smaller batch or shorter sequence',
    );
  });

  it(`KILN_E010 for ${CATALOG.KILN_E010}`, async () => {
    const graph = new Graph();
    const x = graph.add('input', [], { name: 'x', dtype: 'f32', shape: [4] });
    graph.setOutputs([{ name: 'y', node: graph.add('exp', [x], {}, { file: 'model.ts', line: 7, col: 3 }) }]);
    // Written by hand, so codegen's templates can change without moving the line WebGPU names (line 5).
    const code = [
      'struct Params { n: u32, groups: u32 }',
      '@group(0) @binding(0) var<uniform> params: Params;',
      '@group(0) @binding(1) var<storage, read> a: array<f32>;',
      '@group(0) @binding(2) var<storage, read_write> out: array<f32>;',
      '@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) { a[id.x] = exp(a[id.x]); }',
    ].join('\n');
    const broken: Kernel = { ...lowerGraph(graph).kernels[0], code, key: code };
    const message = await caught('KILN_E010', async () => pipelineFor(await getDevice(), broken));
    expect(message).toBe("KILN_E010 model.ts:7:3: compiling the kernel for %1 = exp(%0) : f32[4]: WebGPU rejected it: line 5: cannot store into a read-only type 'ref<storage, f32, read>'");
  });

  it(`KILN_E021 for ${CATALOG.KILN_E021}`, async () => {
    const kdev = await getDevice();
    expect(kdev.f16, `this test needs a device without shader-f16 (SwiftShader); got ${kdev.description}`).toBe(false);
    const x = tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]).half();
    const message = await caught('KILN_E021', () => compile(new HalfLinear().half(), { backend: 'webgpu' })(x));
    expect(message.replace(/\(google swiftshader[^)]*\)/, '(SwiftShader)')).toBe(
      // The linear's matmul and its bias add are one kernel (matmul_epilogue): the first f16 kernel is it.
      `KILN_E021 ${locOf('test/fixtures/errors/models.ts', 'this.proj.forward(x)', 'this.proj.'.length)}: %5 = matmul_epilogue(%0, %1, %3) {transposeA=false, transposeB=true, expr="add($0, $1)"} : f16[2,2] computes in f16, but this WebGPU device (SwiftShader) has no shader-f16; run in f32 (--dtype float32, no autocast, no .half()) or on a GPU that offers shader-f16`,
    );
  });

  it('KILN_E021 from kiln run --dtype float16 on SwiftShader is one line naming the model line of the first f16 kernel', async () => {
    const r = await kiln(['run', NANOGPT, '--config', TINY, '--batch', '1', '--seq', '4', '--dtype', 'float16'], { env: { VK_ICD_FILENAMES: SWIFTSHADER_ICD } });
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    // The first f16 kernel is autocast's cast of ln_1's output for c_attn's matmul: the line of c_attn.
    expect(r.errors[0]).toMatch(new RegExp(`^KILN_E021 ${locOf(NANOGPT, 'this.c_attn.forward(x)', 'this.c_attn.'.length)}: %\\d+ = cast\\(%\\d+\\) \\{dtype="f16"\\} : f16\\[1,4,8\\] meta\\{rule="autocast"\\} computes in f16, but this WebGPU device \\(.*SwiftShader.*\\) has no shader-f16; run in f32`));
  });
});
