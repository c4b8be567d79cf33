// The onnxruntime-web peer: one `com.microsoft.MultiHeadAttention` node with unidirectional=1 (its
// flash-attention path in 1.30), q/k/v as [B, T, H*D], GPU-resident inputs and outputs.
//
// Running it in Node takes what the reference notes say: `dist/ort.webgpu.mjs` imported directly (the
// package's `node` export is CPU-only); its wasm (the asyncify build, the one ort.webgpu.mjs loads)
// given as bytes, with `wasmPaths` pointing at the dist folder for the .mjs glue beside it; and every
// `queue.writeBuffer` from wasm memory (a SharedArrayBuffer, which Dawn rejects) given a copy.
// Known limitation: its prefill flash kernel assumes subgroups of 8 or more, so on SwiftShader
// (subgroups of 4) it is wrong for T >= 32; the check against kiln's output marks that WRONG.

import { existsSync, readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { brotliDecompressSync } from 'node:zlib';
import type * as Ort from 'onnxruntime-web';
import { encodeModel } from './onnx-model.ts';
import { type AttentionShape, type PeerSettings, type PeerVariant, readF32, toHeadsFirst, toTimeFirst } from './peer.ts';

const WASM = 'ort-wasm-simd-threaded.asyncify.wasm';

/**
 * onnxruntime-web's dist folder: node_modules/onnxruntime-web/dist in the nearest folder up from this
 * module (test/bench/peers in the repo, the bundle's folder in node_modules/.cache/kiln or .device/).
 */
function ortDist(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const dist = join(dir, 'node_modules', 'onnxruntime-web', 'dist');
    if (existsSync(join(dist, WASM)) || existsSync(join(dist, `${WASM}.br`))) return dist;
    if (dirname(dir) === dir) throw new Error(`no node_modules/onnxruntime-web/dist/${WASM} above ${fileURLToPath(import.meta.url)}`);
  }
}

/** The wasm bytes: as installed, or brotli-compressed as test/bench/pack.sh ships them to the GPU machine. */
function ortWasm(dist: string): Uint8Array {
  const plain = join(dist, WASM);
  return existsSync(plain) ? readFileSync(plain) : brotliDecompressSync(readFileSync(`${plain}.br`));
}

/** Dawn takes no view of a SharedArrayBuffer in writeBuffer, and ort's wasm memory is one: copy those. */
function copySharedWrites(): void {
  const queue = GPUQueue.prototype as GPUQueue & { kilnCopiesShared?: boolean };
  if (queue.kilnCopiesShared) return;
  const writeBuffer = queue.writeBuffer;
  queue.writeBuffer = function (this: GPUQueue, buffer, offset, data, dataOffset, size) {
    // A typed array's slice() is the same kind of array (so dataOffset and size keep their unit) over a fresh ArrayBuffer.
    const shared = ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer && 'slice' in data;
    return writeBuffer.call(this, buffer, offset, shared ? (data as Uint8Array).slice() : data, dataOffset, size);
  } as GPUQueue['writeBuffer'];
  queue.kilnCopiesShared = true;
}

let loading: Promise<typeof Ort> | null = null;
let loaded: typeof Ort | undefined;

function loadOrt(settings: PeerSettings): Promise<typeof Ort> {
  loading ??= (async () => {
    // V8 optimizes ort's 27 MB wasm during its first run: 30-120 s on a 2-core machine. Smoke runs only
    // check that it works, so they keep V8's baseline wasm compiler (set before the module compiles).
    if (settings.smoke) setFlagsFromString('--liftoff-only');
    copySharedWrites();
    const ort = (await import('../../../node_modules/onnxruntime-web/dist/ort.webgpu.mjs')) as typeof Ort;
    const dist = ortDist();
    ort.env.wasm.wasmPaths = pathToFileURL(dist + '/').href;
    ort.env.wasm.wasmBinary = ortWasm(dist);
    ort.env.wasm.numThreads = 1; // the GPU does the work; no wasm worker threads to start in Node
    ort.env.logLevel = 'error';
    return (loaded = ort);
  })();
  return loading;
}

/** The ONNX model: y = MultiHeadAttention(q, k, v), causal, on [B, T, H*D]. */
function attentionModel({ b, h, t, d }: AttentionShape): Uint8Array {
  const shape = [b, t, h * d];
  return encodeModel({
    nodes: [
      {
        opType: 'MultiHeadAttention',
        domain: 'com.microsoft',
        inputs: ['q', 'k', 'v'],
        outputs: ['y'],
        attributes: [
          { name: 'num_heads', int: h },
          { name: 'unidirectional', int: 1 },
          { name: 'scale', float: 1 / Math.sqrt(d) },
        ],
      },
    ],
    inputs: ['q', 'k', 'v'].map((name) => ({ name, shape })),
    outputs: [{ name: 'y', shape }],
    opsets: { '': 17, 'com.microsoft': 1 },
  });
}

export const ortAttention: PeerVariant<AttentionShape> = {
  name: 'onnxruntime-web MultiHeadAttention (unidirectional)',
  version: () => loaded && `onnxruntime-web ${loaded.env.versions.web ?? '?'}`,
  async prepare(shape, inputs, settings) {
    const ort = await loadOrt(settings);
    const session = await ort.InferenceSession.create(attentionModel(shape), { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer' });
    const device = await ort.env.webgpu.device; // ort opens its device with the first session
    const dims = [shape.b, shape.t, shape.h * shape.d];
    const byteLength = dims.reduce((a, x) => a * x) * 4;
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const buffers: GPUBuffer[] = [];
    const gpuTensor = (data?: Float32Array<ArrayBuffer>) => {
      const buffer = device.createBuffer({ size: byteLength, usage });
      if (data) device.queue.writeBuffer(buffer, 0, data);
      buffers.push(buffer);
      return ort.Tensor.fromGpuBuffer(buffer, { dataType: 'float32', dims });
    };
    const feeds = Object.fromEntries(['q', 'k', 'v'].map((name) => [name, gpuTensor(toTimeFirst(inputs.get(name)!, shape))]));
    const fetches = { y: gpuTensor() }; // the output lands in a buffer of ours, not a new one per run
    return {
      run: () => session.run(feeds, fetches),
      done: () => device.queue.onSubmittedWorkDone(),
      read: async () => {
        await session.run(feeds, fetches);
        return toHeadsFirst(await readF32(device, buffers[3], byteLength), shape);
      },
      dispose: async () => {
        await session.release();
        for (const b of buffers) b.destroy();
      },
    };
  },
};
