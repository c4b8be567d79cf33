// The tfjs-webgpu peer: nanoGPT's attention chain written in tfjs ops as a tfjs user would write it,
// softmax(q @ k^T * scale + causal bias) @ v, and a plain matMul. tfjs registers its webgpu
// backend at import when navigator.gpu exists, and opens its own device on the shared adapter.

import type * as Tf from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import type { AttentionShape, PeerRun, PeerVariant } from './peer.ts';

let loading: Promise<typeof Tf> | null = null;
let loaded: typeof Tf | undefined;

function loadTfjs(): Promise<typeof Tf> {
  loading ??= (async () => {
    const tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs could not start its webgpu backend');
    return (loaded = tf);
  })();
  return loading;
}

const version = () => loaded && `@tensorflow/tfjs-core ${loaded.version_core}`;

/** Times and reads one tfjs computation over tensors it keeps: each run's intermediates are freed by tidy. */
function tfjsRun(tf: typeof Tf, keep: Tf.Tensor[], compute: () => Tf.Tensor): PeerRun {
  const backend = tf.backend() as WebGPUBackend;
  return {
    run: () => tf.tidy(() => void compute()),
    done: () => {
      // tfjs holds dispatches in an open compute pass until a batch fills: end it and submit, as its own reads do.
      backend.ensureCommandEncoderReady();
      backend.endComputePassEncoder();
      backend.submitQueue();
      return backend.device.queue.onSubmittedWorkDone();
    },
    read: async () => {
      const y = tf.tidy(compute);
      const data = (await y.data()) as Float32Array;
      y.dispose();
      return data;
    },
    dispose: () => tf.dispose(keep),
  };
}

export const tfjsAttention: PeerVariant<AttentionShape> = {
  name: 'tfjs-webgpu manual chain',
  version,
  async prepare({ b, h, t, d }, inputs) {
    const tf = await loadTfjs();
    const [q, k, v] = ['q', 'k', 'v'].map((name) => tf.tensor(inputs.get(name)!, [b, h, t, d]));
    const positions = tf.range(0, t, 1, 'int32');
    // The causal mask as an additive [T, T] bias (-inf above the diagonal, 0 elsewhere), made once.
    // A broadcast tf.where(mask, -inf, att) is not a WebGPU kernel in tfjs 4.22: it ran on the CPU
    // (10.8 s at B12 H12 T1024), which measures tfjs's fallback, not its GPU path.
    const bias = tf.tidy(() => tf.where(tf.greater(tf.reshape(positions, [1, t]), tf.reshape(positions, [t, 1])), tf.scalar(-Infinity), tf.scalar(0)));
    const attention = () => {
      const att = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(d));
      return tf.matMul(tf.softmax(tf.add(att, bias)), v);
    };
    return tfjsRun(tf, [q, k, v, positions, bias], attention);
  },
};

export const tfjsMatmul: PeerVariant<number> = {
  name: 'tfjs-webgpu matMul',
  version,
  async prepare(n, inputs) {
    const tf = await loadTfjs();
    const [a, b] = ['a', 'b'].map((name) => tf.tensor(inputs.get(name)!, [n, n]));
    return tfjsRun(tf, [a, b], () => tf.matMul(a, b));
  },
};
