// Token ids outside [0, vocab_size) and targets outside [0, C) raise the same KILN_E011 line, naming the
// user's line, on the cpu and webgpu backends, eager and compiled, whether the ids are on the host or
// only on the GPU (then the kernels' own check reports them). `{ checkBounds: false }` turns it off.

import { afterAll, describe, expect, it } from 'vitest';
import { AdamW, KilnError, Tensor, compile, compileTrainStep, tensor, useBackend } from '../index.ts';
import createModel from '../examples/nanogpt/model.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { type Runner, eagerInputIndex } from '../compiler/backend.ts';
import { loadBackend } from '../compiler/backends.ts';
import { leafFeeder, stateTensors } from '../compiler/leaves.ts';
import { GpuValue } from '../compiler/webgpu.ts';
import { lowerGraph } from '../codegen/index.ts';
import { getDevice, releaseDevice, upload } from '../runtime/webgpu/index.ts';

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

const [B, T, V] = [2, 6, 16];
const model = createModel({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 8, vocab_size: V, flash: false }).eval();
const goodIds = Array.from({ length: B * T }, (_, i) => (i * 5) % V);
const ids = (edits: Record<number, number> = {}) => tensor(goodIds.map((v, i) => edits[i] ?? v), [B, T], 'i32');
const targets = (edits: Record<number, number> = {}) => tensor(goodIds.map((v, i) => edits[i] ?? (v + 1) % V), [B, T], 'i32');

/** The same values, only on the GPU (as ids computed there would be). */
async function onGpu(t: Tensor): Promise<Tensor> {
  const kdev = await getDevice();
  return new Tensor(t.type, { device: new GpuValue(kdev, upload(kdev, t.readHost()!), t.type) });
}

/** The message a call rejects or throws with (it must be a KilnError). */
async function messageOf(call: () => unknown): Promise<string> {
  try {
    await call();
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return (e as KilnError).message;
  }
  throw new Error('expected a KilnError, got none');
}

const CASES: [string, Record<number, number>, Record<number, number>, RegExp][] = [
  ['a token id equal to vocab_size', { 9: V }, {}, /^KILN_E011 examples\/nanogpt\/model\.ts:209:\d+: embedding index 16 at \[1, 3\] is outside \[0, 16\)$/],
  ['a negative token id', { 3: -1 }, {}, /model\.ts:209:\d+: embedding index -1 at \[0, 3\] is outside \[0, 16\)$/],
  ['a huge token id', { 0: 2147483647 }, {}, /model\.ts:209:\d+: embedding index 2147483647 at \[0, 0\] is outside/],
  ['several bad token ids', { 2: V, 7: -3, 11: 99 }, {}, /model\.ts:209:\d+: 3 embedding indices are outside \[0, 16\), from -3 to 99 \(the first at \[0, 2\]\)$/],
  ['a target equal to C', {}, { 4: V }, /^KILN_E011 examples\/nanogpt\/model\.ts:220:\d+: cross_entropy target 16 at row 4 is outside \[0, 16\)$/],
  ['a target of -2 beside ignored -1s', {}, { 1: -1, 5: -2, 8: -1 }, /model\.ts:220:\d+: cross_entropy target -2 at row 5 is outside \[0, 16\)$/],
];

describe('an index outside its range raises the same KILN_E011 on every backend', () => {
  const cpuCompiled = compile(model, { backend: 'cpu' });
  const gpuCompiled = compile(model, { backend: 'webgpu' });
  for (const [label, idxEdits, targetEdits, pattern] of CASES) {
    it(`${label}: cpu and webgpu, eager and compiled, ids on the host or on the GPU`, async () => {
      const [idx, tgt] = [ids(idxEdits), targets(targetEdits)];
      const expected = await messageOf(() => model.forward(idx, tgt));
      expect(expected).toMatch(pattern);
      expect(await messageOf(() => cpuCompiled(idx, tgt))).toBe(expected);
      expect(await messageOf(() => gpuCompiled(idx, tgt))).toBe(expected);
      // Only on the GPU: the kernels' record, read back before the compiled call returns.
      const [gpuIdx, gpuTgt] = [await onGpu(idx), await onGpu(tgt)];
      expect(await messageOf(() => gpuCompiled(gpuIdx, gpuTgt))).toBe(expected);
      await useBackend('webgpu');
      try {
        expect(await messageOf(() => model.forward(idx, tgt))).toBe(expected); // on the host: at once, as on the cpu
        // Only on the GPU: eager ops queue on; the first read reports it.
        const { loss } = model.forward(gpuIdx, gpuTgt);
        expect(await messageOf(() => loss!.data())).toBe(expected);
      } finally {
        await useBackend('cpu');
      }
    });
  }

  it('accepts in-range ids and -1 targets (ignore_index): the same results as without the check', async () => {
    const [idx, tgt] = [ids(), targets({ 0: -1, 7: -1 })];
    const c = await gpuCompiled.lower(idx, tgt);
    const checked = await gpuCompiled(idx, tgt);
    const unchecked = await prepareRunner(c.passes.graph, false);
    const outs = await unchecked(leafFeeder(c.passes.graph, stateTensors(model), c.trace.argNames, [idx, tgt]));
    const [logits, loss] = [outs.get('logits')!, outs.get('loss')!];
    expect(await checked.logits.data()).toEqual(await logits.data());
    expect(await checked.loss!.data()).toEqual(await loss.data());
    const cpu = await cpuCompiled(idx, tgt);
    expect(Math.abs((await cpu.loss!.item()) - (await checked.loss!.item()))).toBeLessThan(1e-5);
  });

  it('is left out at the backend level with { checkBounds: false }: no check in the kernels, no error', async () => {
    const [idx, tgt] = [ids({ 9: V }), targets({ 4: -2 })];
    const c = await gpuCompiled.lower(idx, tgt);
    const kdev = await getDevice();
    const bindings = (checkBounds: boolean) => lowerGraph(c.passes.graph, kdev.limits, { checkBounds }).kernels.flatMap((k) => k.bindings.filter((b) => b.kind === 'index_errors'));
    expect(bindings(true)).toHaveLength(3); // the wte and wpe embeddings, cross_entropy
    expect(bindings(false)).toEqual([]);
    const unchecked = await prepareRunner(c.passes.graph, false);
    const outs = await unchecked(leafFeeder(c.passes.graph, stateTensors(model), c.trace.argNames, [await onGpu(idx), await onGpu(tgt)]));
    expect(Number.isFinite(await outs.get('loss')!.item())).toBe(true);
    // The same through compile()'s option, with the ids on the host or the GPU.
    const optedOut = compile(model, { backend: 'webgpu', checkBounds: false });
    expect(Number.isFinite(await (await optedOut(idx, tgt)).loss!.item())).toBe(true);
    expect(Number.isFinite(await (await optedOut(await onGpu(idx), await onGpu(tgt))).loss!.item())).toBe(true);
  });

  it('stops a training step before it changes a weight', async () => {
    const opt = new AdamW(model, { lr: 0.1 });
    const step = compileTrainStep(model, opt);
    const before = Float32Array.from(await model.lm_head.weight.data());
    const msg = await messageOf(() => step(ids(), targets({ 4: V })));
    expect(msg).toMatch(/model\.ts:220:\d+: cross_entropy target 16 at row 4 is outside \[0, 16\)$/);
    await step.sync();
    expect(await model.lm_head.weight.data()).toEqual(before);
  });
});

async function prepareRunner(graph: Graph, checkBounds: boolean): Promise<Runner> {
  return (await loadBackend('webgpu')).prepare(graph, { checkBounds });
}

/** Single-node graphs of every op that reads indices, its index operand fed only on the GPU (so the kernel checks). */
describe('each index-reading kernel reports what the cpu reference raises', () => {
  const loc = { file: 'user.ts', line: 7, col: 3 };
  const cases: [string, (g: Graph) => Node, number[]][] = [
    ['embedding', (g) => g.add('embedding', [leaf(g, 'x0', 'f32', [V, 4]), leaf(g, 'x1', 'i32', [3, 4])], {}, loc), [0, 5, 16, 2, -7, 15, 1, 1, 300, 0, 0, 4]],
    ['embedding_backward', (g) => g.add('embedding_backward', [leaf(g, 'x0', 'f32', [12, 4]), leaf(g, 'x1', 'i32', [12])], { num: V }, loc), [0, 5, 3, 2, 17, 15, 1, 1, 3, 0, 0, 4]],
    ['cross_entropy', (g) => g.add('cross_entropy', [leaf(g, 'x0', 'f32', [12, V]), leaf(g, 'x1', 'i32', [12])], { ignoreIndex: -1 }, loc), [0, -1, 3, 2, 16, 15, 1, -5, 3, 0, 16, 4]],
    // cross_entropy_rows: what a big cross_entropy becomes (passes/cross-entropy.ts); a workgroup per row.
    ['cross_entropy_rows', (g) => g.add('cross_entropy_rows', [leaf(g, 'x0', 'f32', [12, V]), leaf(g, 'x1', 'i32', [12])], { ignoreIndex: -100 }, loc), [0, -1, 3, 2, 1, 15, 1, 2, 3, 0, 1, 4]],
  ];
  for (const [op, make, indices] of cases) {
    it(op, async () => {
      const g = new Graph();
      const node = make(g);
      g.outputs = [{ name: 'y', node }];
      const feeds = g.nodes.filter((n) => n.op === 'input').map((n) => n.type.dtype === 'i32' ? tensor(indices, [...n.type.shape], 'i32') : tensor(Array.from({ length: n.type.shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i)), [...n.type.shape]));
      const feed = (tensors: Tensor[]) => (n: Node) => tensors[eagerInputIndex(n)];
      const expected = await messageOf(() => loadBackend('cpu').then(async (b) => (await b.prepare(g))(feed(feeds))));
      expect(expected).toMatch(/^KILN_E011 user\.ts:7:3: /);
      const onDevice = await Promise.all(feeds.map((t) => (t.dtype === 'i32' ? onGpu(t) : t)));
      expect(await messageOf(async () => (await prepareRunner(g, true))(feed(onDevice)))).toBe(expected);
    });
  }
});

function leaf(g: Graph, name: string, dtype: 'f32' | 'i32', shape: number[]): Node {
  return g.add('input', [], { name, dtype, shape });
}
