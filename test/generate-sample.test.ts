// The sample op's CPU reference (ir/ops/sample.ts): greedy ties, top-k, temperature, and the drawn
// distribution against the softmax it should follow (a chi-square test), plus its refusals.

import { describe, expect, it } from 'vitest';
import { hostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { getOp } from '../ir/registry.ts';
import { thrown } from './helpers.ts';
import { CHI2_999, chiSquare, expectedProbs } from './sample-stats.ts';
import { singleOp } from './op-graph.ts';

const sample = getOp('sample');

/** The ids drawn for `rows` copies of one row of logits, counter `counter` (row r draws with u(seed', r)). */
function draws(row: number[], rows: number, attrs: Record<string, number | boolean>, counter = 0): Int32Array {
  const logits = hostTensor('f32', [rows, row.length], Float32Array.from({ length: rows * row.length }, (_, i) => row[i % row.length]));
  const inputs = attrs.greedy ? [logits] : [logits, hostTensor('i32', [], Int32Array.of(counter))];
  return sample.cpu(inputs, attrs, { dtype: 'i32', shape: [rows] }, 'f32') as Int32Array;
}

describe('sample (CPU reference)', () => {
  it('greedy picks the largest logit, and of equal largest ones the lowest id, as torch.argmax', () => {
    expect([...draws([1, 3, 3, 2], 1, { greedy: true })]).toEqual([1]);
    expect([...draws([-Infinity, -Infinity], 1, { greedy: true })]).toEqual([0]);
  });

  it('top_k 1 always draws the argmax', () => {
    expect(new Set(draws([0.1, 2, 1.9, -1], 500, { topK: 1, seed: 3 }))).toEqual(new Set([1]));
  });

  it('top_k keeps every logit equal to the k-th largest, as nanoGPT`s logits < v[:, [-1]] does', () => {
    expect(new Set(draws([5, 5, 1], 400, { topK: 1, seed: 1 }))).toEqual(new Set([0, 1]));
  });

  it('draws follow softmax(logits): chi-square below its 0.1% critical value over 20000 draws (3 degrees of freedom)', () => {
    const logits = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const ids = draws(logits, 20000, { seed: 7 });
    expect(chiSquare(ids, expectedProbs(logits))).toBeLessThan(CHI2_999[3]);
    // A sampler that ignored the logits would fail: uniform probabilities are far off.
    expect(chiSquare(ids, [0.25, 0.25, 0.25, 0.25])).toBeGreaterThan(1000);
  });

  it('temperature and top_k shape the distribution as nanoGPT`s: softmax(top_k(logits) / T)', () => {
    const logits = [2, 1, 0.5, 0, -1];
    const hot = draws(logits, 20000, { temperature: 2, seed: 11 });
    expect(chiSquare(hot, expectedProbs(logits, 2))).toBeLessThan(CHI2_999[4]);
    const top2 = draws(logits, 20000, { temperature: 0.7, topK: 2, seed: 12 });
    expect(chiSquare(top2, expectedProbs(logits, 0.7, 2))).toBeLessThan(CHI2_999[1]);
  });

  it('the counter changes the draws, the same counter repeats them', () => {
    const logits = Array.from({ length: 50 }, (_, i) => Math.sin(i));
    expect([...draws(logits, 64, { seed: 5 }, 1)]).toEqual([...draws(logits, 64, { seed: 5 }, 1)]);
    expect([...draws(logits, 64, { seed: 5 }, 2)]).not.toEqual([...draws(logits, 64, { seed: 5 }, 1)]);
  });

  it('refuses a temperature of 0 without greedy, a negative top_k, a draw without a counter and a greedy one with a counter', () => {
    const logits = hostTensor('f32', [1, 4], new Float32Array(4));
    const counter = hostTensor('i32', [], Int32Array.of(0));
    expect(thrown(() => singleOp('sample', [logits, counter], { temperature: 0 })).message).toMatch(/^KILN_E011 sample temperature must be a positive number, got 0/);
    expect(thrown(() => singleOp('sample', [logits, counter], { topK: -1 })).message).toMatch(/^KILN_E011 sample topK must be 0/);
    expect(thrown(() => singleOp('sample', [logits], {})).message).toMatch(/^KILN_E011 sample without greedy draws with a counter operand/);
    expect(thrown(() => singleOp('sample', [logits, counter], { greedy: true })).message).toMatch(/^KILN_E011 a greedy sample draws nothing/);
  });
});
