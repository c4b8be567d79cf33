// f16 arithmetic on lavapipe (Mesa 25, the CPU Vulkan driver with shader-f16) against the host f16 of
// ir/f16.ts, bit for bit: the premise of issue 16's CPU reference, which rounds to f16 after each op.
// Runs where lavapipe is installed (.ci/run installs it from bookworm-backports); elsewhere it says why
// it is skipped. SwiftShader, where the f32 tests run, has no shader-f16.

import { HAS_LAVAPIPE, LAVAPIPE_ICD } from './lavapipe.ts'; // first: points this file's process at lavapipe
import { afterAll, describe, expect, it } from 'vitest';
import { f16Bits, f16Value } from '../ir/f16.ts';
import { rng } from './helpers.ts';

const N = 4096;

/** A device on lavapipe with shader-f16, from an instance of its own (test/lavapipe.ts set VK_ICD_FILENAMES, which Dawn reads when one is created). */
async function lavapipeDevice(): Promise<{ gpu: GPU; device: GPUDevice } | null> {
  if (!HAS_LAVAPIPE) return null;
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create([]); // kept referenced until the end: Dawn can crash at exit on lavapipe otherwise
  const adapter = await gpu.requestAdapter();
  if (!adapter?.features.has('shader-f16')) return null;
  return { gpu, device: await adapter.requestDevice({ requiredFeatures: ['shader-f16'] }) };
}

const lavapipe = await lavapipeDevice();
// CI installs lavapipe (.ci/run): there a missing one is a failure, not a skip.
if (!lavapipe && process.env.KILN_REQUIRE_LAVAPIPE) throw new Error(`KILN_REQUIRE_LAVAPIPE is set but no lavapipe adapter with shader-f16 opened from ${LAVAPIPE_ICD}`);
afterAll(() => lavapipe?.device.destroy());

/** Runs `o[i] = expr` over three f16 inputs a, b, c and returns o's bit patterns. */
async function run(device: GPUDevice, expr: string, inputs: Uint16Array<ArrayBuffer>[]): Promise<Uint16Array> {
  const code = `enable f16;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read> c: array<f16>;
@group(0) @binding(3) var<storage, read_write> o: array<f16>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
  let i = id.x;
  _ = c[i]; // every binding used, so the automatic layout has all four
  o[i] = ${expr};
}`;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const buffers = inputs.map((data) => {
    const buffer = device.createBuffer({ size: data.byteLength, usage });
    device.queue.writeBuffer(buffer, 0, data);
    return buffer;
  });
  const out = device.createBuffer({ size: N * 2, usage });
  const read = device.createBuffer({ size: N * 2, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [...buffers, out].map((buffer, binding) => ({ binding, resource: { buffer } })) });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(N / 64);
  pass.end();
  encoder.copyBufferToBuffer(out, 0, read, 0, N * 2);
  device.queue.submit([encoder.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  return new Uint16Array(read.getMappedRange().slice(0));
}

describe.skipIf(!lavapipe)(`f16 on lavapipe equals the host's f16 rounding after each op${lavapipe ? '' : ` (skipped: no lavapipe with shader-f16 at ${LAVAPIPE_ICD})`}`, () => {
  const r = rng(16);
  // Magnitudes from 2^-20 to 2^12, so products and sums meet subnormals, overflow and ties.
  const operand = () => Uint16Array.from({ length: N }, () => f16Bits((r() < 0.5 ? -1 : 1) * 2 ** (r() * 32 - 20)));
  const [a, b, c] = [operand(), operand(), operand()];
  const host = (f: (x: number, y: number, z: number) => number) => Uint16Array.from({ length: N }, (_, i) => f16Bits(f(f16Value(a[i]), f16Value(b[i]), f16Value(c[i]))));
  const cases: [string, string, (x: number, y: number, z: number) => number][] = [
    ['a * b', 'a[i] * b[i]', (x, y) => x * y],
    ['a + b', 'a[i] + b[i]', (x, y) => x + y],
    ['a / b', 'a[i] / b[i]', (x, y) => x / y],
    // One expression: the driver does not contract it into a fused multiply-add, so the product is rounded first.
    ['a * b + c, the product rounded to f16 before the add', 'a[i] * b[i] + c[i]', (x, y, z) => f16Value(f16Bits(x * y)) + z],
    ['f16(f32(a) * f32(b)): an f32 product stored as f16', 'f16(f32(a[i]) * f32(b[i]))', (x, y) => Math.fround(x * y)],
  ];
  for (const [label, expr, f] of cases) {
    it(`${label}: every one of ${N} results bit-equal`, async () => {
      const got = await run(lavapipe!.device, expr, [a, b, c]);
      const want = host(f);
      const differ = [...got.keys()].filter((i) => got[i] !== want[i] && !(Number.isNaN(f16Value(got[i])) && Number.isNaN(f16Value(want[i]))));
      expect(differ.slice(0, 5).map((i) => `${f16Value(a[i])} ${f16Value(b[i])} ${f16Value(c[i])}: ${got[i].toString(16)} vs ${want[i].toString(16)}`)).toEqual([]);
    });
  }
});
