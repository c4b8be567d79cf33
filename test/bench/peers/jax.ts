// The jax-js peer: `nn.dotProductAttention(q, k, v, { isCausal: true })` under `jit`, q/k/v as
// [B, T, H, D]. jax-js uses iterator helpers (Iterator.prototype.map), which Node 20 lacks: core-js
// supplies them first. Its arrays are lazy and reference-counted: each run takes references to the
// inputs (`.ref`), realizes its output (`blockUntilReady`) and frees it, so a timed run includes one
// wait for the GPU (small beside jax-js's ~95 ms for the full case on the H100).

import type * as Jax from '@jax-js/jax';
import { type AttentionShape, type PeerVariant, toHeadsFirst, toTimeFirst } from './peer.ts';

let loading: Promise<typeof Jax> | null = null;
let loaded = false;

function loadJax(): Promise<typeof Jax> {
  loading ??= (async () => {
    const iterator = (globalThis as { Iterator?: { prototype?: { map?: unknown } } }).Iterator;
    if (typeof iterator?.prototype?.map !== 'function') await import('core-js/actual/iterator/index.js');
    const jax = await import('@jax-js/jax');
    const devices = await jax.init('webgpu');
    if (!devices.includes('webgpu')) throw new Error('jax-js found no WebGPU device');
    jax.defaultDevice('webgpu');
    loaded = true;
    return jax;
  })();
  return loading;
}

export const jaxAttention: PeerVariant<AttentionShape> = {
  name: 'jax-js dotProductAttention (jit, causal)',
  version: () => (loaded ? '@jax-js/jax' : undefined), // it tells no version at run time; package-lock.json has it
  async prepare(shape, inputs) {
    const jax = await loadJax();
    const { b, h, t, d } = shape;
    const [q, k, v] = ['q', 'k', 'v'].map((name) => jax.numpy.array(toTimeFirst(inputs.get(name)!, shape)).reshape([b, t, h, d]));
    const attention = jax.jit((q: Jax.Array, k: Jax.Array, v: Jax.Array) => jax.nn.dotProductAttention(q, k, v, { isCausal: true }));
    const device = jax.getWebGPUDevice();
    return {
      run: async () => {
        const y = await attention(q.ref, k.ref, v.ref).blockUntilReady();
        y.dispose();
      },
      done: () => device.queue.onSubmittedWorkDone(),
      read: async () => toHeadsFirst((await attention(q.ref, k.ref, v.ref).data()) as Float32Array, shape),
      dispose: () => {
        for (const x of [q, k, v]) x.dispose();
        attention.dispose();
      },
    };
  },
};
