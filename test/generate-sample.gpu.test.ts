// The sample kernel (codegen/wgsl/sample.ts) against its CPU reference on WebGPU: greedy ids exactly,
// drawn ids identical for the same seed and counter, and the drawn distribution (chi-square).

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { rng } from './helpers.ts';
import { singleOp } from './op-graph.ts';
import { CHI2_999, chiSquare, expectedProbs } from './sample-stats.ts';

afterAll(releaseDevice);

async function gpuSample(logits: HostTensor, attrs: Record<string, number | boolean>, counter?: number): Promise<Int32Array> {
  const operands = counter === undefined ? [logits] : [logits, hostTensor('i32', [], Int32Array.of(counter))];
  const { graph, feeds, node } = singleOp('sample', operands, attrs);
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(graph));
  const out = (await readback(kdev, exec.run(feeds).get('y')!, node.type)) as Int32Array;
  exec.destroy();
  return out;
}

function cpuSample(logits: HostTensor, attrs: Record<string, number | boolean>, counter?: number): Int32Array {
  const inputs = counter === undefined ? [logits] : [logits, hostTensor('i32', [], Int32Array.of(counter))];
  return getOp('sample').cpu(inputs, attrs, { dtype: 'i32', shape: logits.type.shape.slice(0, -1) }, 'f32') as Int32Array;
}

function randomLogits(rows: number, v: number, seed: number, spread = 4): HostTensor {
  const r = rng(seed);
  return hostTensor('f32', [rows, v], Float32Array.from({ length: rows * v }, () => (r() * 2 - 1) * spread));
}

describe('sample on WebGPU', () => {
  it('greedy gives exactly the CPU argmax, ties to the lowest id, over 8 rows of 3000 logits', async () => {
    const logits = randomLogits(8, 3000, 1);
    // Row 0 has its largest value twice: the lower id must win, as torch.argmax picks it.
    logits.data[100] = 9;
    logits.data[2900] = 9;
    const got = await gpuSample(logits, { greedy: true });
    expect([...got]).toEqual([...cpuSample(logits, { greedy: true })]);
    expect(got[0]).toBe(100);
  });

  it('draws the same ids as the CPU for the same seed and counter, with and without top_k and temperature', async () => {
    const logits = randomLogits(16, 2000, 2);
    const cases: Record<string, number>[] = [{ seed: 3 }, { seed: 4, topK: 40 }, { seed: 5, temperature: 0.8, topK: 200 }, { seed: 6, temperature: 1.3 }];
    for (const attrs of cases) {
      for (const counter of [0, 17]) {
        expect([...(await gpuSample(logits, attrs, counter))], JSON.stringify({ ...attrs, counter })).toEqual([...cpuSample(logits, attrs, counter)]);
      }
    }
  });

  it('its draws follow softmax(top_k(logits) / T): chi-square below the 0.1% critical value over 4096 rows', async () => {
    const row = [2, 1, 0.5, 0, -1, -3];
    const logits = hostTensor('f32', [4096, row.length], Float32Array.from({ length: 4096 * row.length }, (_, i) => row[i % row.length]));
    const plain = await gpuSample(logits, { seed: 9 }, 0);
    expect(chiSquare(plain, expectedProbs(row))).toBeLessThan(CHI2_999[5]);
    const top3 = await gpuSample(logits, { seed: 10, temperature: 0.9, topK: 3 }, 0);
    expect(new Set(top3)).toEqual(new Set([0, 1, 2]));
    expect(chiSquare(top3, expectedProbs(row, 0.9, 3))).toBeLessThan(CHI2_999[2]);
  });
});
