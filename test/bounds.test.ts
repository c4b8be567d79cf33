// Index checks without a GPU: the wording both backends share, the GPU record's encoding (simulated
// here as the kernels' atomics would write it), how codegen wires the check, and which compiled
// kernels' indices are checked on the host, at compile time or only on the GPU.

import { describe, expect, it } from 'vitest';
import { RECORD_WORDS, decodeIndexFaults, lowerGraph, lowerNode } from '../codegen/index.ts';
import { IndexChecks } from '../compiler/index-checks.ts';
import { Tensor, compile, tensor } from '../index.ts';
import createModel from '../examples/nanogpt/model.ts';
import { type IndexRange, findIndexFaults, indexError } from '../ir/bounds.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { rng } from './helpers.ts';

const embedding: IndexRange = { op: 'embedding', noun: 'index', operand: 1, size: 16, shape: [2, 6] };
const targets: IndexRange = { op: 'cross_entropy', noun: 'target', operand: 1, size: 5, shape: [6], ignore: -1 };
const loc = { file: 'model.ts', line: 12, col: 9 };

describe('the KILN_E011 line for indices outside their range', () => {
  const message = (indices: number[], range: IndexRange) => {
    const faults = findIndexFaults(indices, range);
    return faults && indexError(range, faults, loc).message;
  };
  const ids = (edits: Record<number, number>) => Array.from({ length: 12 }, (_, i) => edits[i] ?? i);

  it('names one bad index, its coordinates and the range', () => {
    expect(message(ids({ 9: 16 }), embedding)).toBe('KILN_E011 model.ts:12:9: embedding index 16 at [1, 3] is outside [0, 16)');
  });
  it('counts several, with their values and the first one\'s place', () => {
    expect(message(ids({ 2: 16, 7: -3, 11: 99 }), embedding)).toBe('KILN_E011 model.ts:12:9: 3 embedding indices are outside [0, 16), from -3 to 99 (the first at [0, 2])');
    expect(message(ids({ 4: 20, 5: 20 }), embedding)).toBe('KILN_E011 model.ts:12:9: 2 embedding indices are outside [0, 16), all 20 (the first at [0, 4])');
  });
  it('names a target by its row, and skips the ignore index', () => {
    expect(message([0, -1, 4, -2, -1, 1], targets)).toBe('KILN_E011 model.ts:12:9: cross_entropy target -2 at row 3 is outside [0, 5)');
    expect(message([0, -1, 4, 3, -1, 1], targets)).toBeNull();
  });
});

/** What report_bad_index's atomics leave in slot 0, in whatever order the threads come. */
function simulateRecord(indices: readonly number[], range: IndexRange, order: readonly number[]): Uint32Array {
  const words = new Uint32Array(RECORD_WORDS);
  for (const p of order) {
    const v = indices[p];
    if (v === range.ignore || (v >>> 0) < range.size) continue; // the kernels' one compare: bitcast<u32>(v) >= size
    const key = ((v >>> 0) ^ 0x80000000) >>> 0;
    words[0] += 1;
    words[1] = Math.max(words[1], ~p >>> 0);
    words[2] = Math.max(words[2], key);
    words[3] = Math.max(words[3], ~key >>> 0);
  }
  return words;
}

describe('the GPU record', () => {
  it('decodes to what the CPU finds, whatever order the threads write it in', () => {
    const random = rng(11);
    const range = { ...embedding, shape: [64] };
    for (let trial = 0; trial < 200; trial++) {
      const values = [0, 15, 16, -1, 2147483647, -2147483648, 17, 1000, 3];
      const indices = Array.from({ length: 64 }, () => (random() < 0.9 ? Math.floor(random() * 16) : values[Math.floor(random() * values.length)]));
      const order = [...indices.keys()].sort(() => random() - 0.5);
      expect(decodeIndexFaults(simulateRecord(indices, range, order), 0)).toEqual(findIndexFaults(indices, range));
    }
  });
});

describe('codegen of index checks', () => {
  const graph = () => {
    const g = new Graph();
    const w = g.add('input', [], { name: 'w', dtype: 'f32', shape: [16, 4] });
    const idx = g.add('input', [], { name: 'idx', dtype: 'i32', shape: [6] });
    const a = g.add('embedding', [w, idx]);
    const b = g.add('embedding', [w, g.add('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [6] })]);
    g.outputs = [{ name: 'y', node: g.add('add', [a, b]) }];
    return g;
  };

  it('numbers the checking kernels\' record slots in program order', () => {
    const kernels = lowerGraph(graph()).kernels.filter((k) => k.indexCheck);
    expect(kernels.map((k) => k.indexCheck!.slot)).toEqual([0, 1]);
    expect(kernels.every((k) => k.code.includes('var<storage, read_write> index_errors: array<atomic<u32>>'))).toBe(true);
    expect(kernels[0].bindings.at(-1)).toEqual({ binding: 4, name: 'index_errors', kind: 'index_errors' });
  });

  it('with checkBounds false binds no record, and report_bad_index does nothing', () => {
    const kernels = lowerGraph(graph(), undefined, { checkBounds: false }).kernels;
    expect(kernels.some((k) => k.indexCheck || k.code.includes('index_errors'))).toBe(false);
    const embed = kernels.find((k) => k.node.op === 'embedding')!;
    expect(embed.code).toContain('fn report_bad_index(position: u32, value: i32) {}');
    expect(embed.code).not.toContain('error_slot');
    expect(lowerNode(embed.node)!.code).toContain('error_slot'); // on by default
  });
});

describe('where a compiled run checks indices', () => {
  const model = createModel({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 8, vocab_size: 16 }).eval();
  const idx = tensor(Array.from({ length: 12 }, (_, i) => i % 16), [2, 6], 'i32');
  const gpuOnly = (t: Tensor) => new Tensor(t.type, { device: { backend: 'webgpu', read: async () => t.readHost()!.data } });

  it('host ids before the run, arange positions at compile time; ids only on the GPU need the record', async () => {
    const c = await compile(model, { backend: 'cpu' }).lower(idx, idx);
    const checks = IndexChecks.of(lowerGraph(c.passes.graph));
    const feeder = (args: Tensor[]) => (n: Node) => args[c.trace.argNames.indexOf(String(n.attrs.name))];
    expect(checks.beforeRun(feeder([idx, idx]))).toBe(false);
    expect(checks.beforeRun(feeder([gpuOnly(idx), idx]))).toBe(true);
    const bad = tensor([...idx.readHost()!.data].map((v, i) => (i === 3 ? 16 : v)), [2, 6], 'i32');
    expect(() => checks.beforeRun(feeder([bad, idx]))).toThrow(/KILN_E011 examples\/nanogpt\/model\.ts:209:\d+: embedding index 16 at \[0, 3\] is outside \[0, 16\)/);
  });
});
