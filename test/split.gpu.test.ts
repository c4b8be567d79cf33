// Tensors past one storage binding (codegen/split.ts): with KILN_MAX_STORAGE_BINDING lowering the
// binding limit to a few KiB, the kernels over the "logits" run in windows of rows and give the same
// bits as unsplit; a kernel that cannot be split fails with one KILN_E009 naming the tensor, its size
// and the limit.

import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { splitKernel } from '../codegen/split.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { KernelTimer } from '../runtime/webgpu/timing.ts';
import { compile, fromHost } from '../index.ts';
import { rng } from './helpers.ts';

afterAll(releaseDevice);
afterEach(() => delete process.env.KILN_MAX_STORAGE_BINDING);

const loc = (line: number) => ({ file: 'model.ts', line, col: 5 });

/** lm_head and what reads its logits: [4, 64, 16] @ W^T [40, 16] -> logits f32[4, 64, 40] (40 KiB), then bias, softmax, per-row losses, layer_norm. */
function logitsGraph() {
  const g = new Graph();
  const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [4, 64, 16] });
  const w = g.add('input', [], { name: 'w', dtype: 'f32', shape: [40, 16] });
  const bias = g.add('input', [], { name: 'bias', dtype: 'f32', shape: [40] });
  const targets = g.add('input', [], { name: 'targets', dtype: 'i32', shape: [256] });
  const logits = g.add('matmul', [x, w], { transposeB: true }, loc(10));
  const shifted = g.add('add', [logits, bias], {}, loc(11));
  const scaled = g.add('fused_elementwise', [shifted, bias], { expr: 'tanh(mul($0, $1))' }, loc(12));
  const probs = g.add('softmax', [scaled], { dim: -1 }, loc(13));
  const rows = g.add('cross_entropy_rows', [g.add('reshape', [shifted], { shape: [256, 40] }), targets], { ignoreIndex: -1 }, loc(14));
  const normed = g.add('layer_norm', [shifted, bias, bias], { eps: 1e-5 }, loc(15));
  g.setOutputs([{ name: 'logits', node: logits }, { name: 'probs', node: probs }, { name: 'rows', node: rows }, { name: 'normed', node: normed }]);
  const r = rng(19);
  const floats = (n: Node) => ({ type: n.type, data: Float32Array.from({ length: n.type.shape.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1) });
  const labels = Int32Array.from({ length: 256 }, (_, i) => (i % 9 === 0 ? -1 : Math.floor(r() * 40)));
  const feeds = new Map<Node, HostTensor>([[x, floats(x)], [w, floats(w)], [bias, floats(bias)], [targets, { type: targets.type, data: labels }]]);
  return { g, feeds };
}

async function runAll(g: Graph, feeds: Map<Node, HostTensor>) {
  const kdev = await getDevice();
  const program = lowerGraph(g, kdev.limits);
  const exec = await Executor.create(kdev, program);
  const timer = new KernelTimer(kdev); // counts the dispatches the run made
  const outs = exec.run(feeds, timer);
  const got = new Map<string, ArrayLike<number>>();
  for (const o of g.outputs) got.set(o.name, await readback(kdev, outs.get(o.name)!, o.node.type));
  const dispatches = (await timer.collect()).length;
  timer.destroy();
  exec.destroy();
  return { got, program, dispatches };
}

describe('tensors past the binding limit', () => {
  it('splits matmul, elementwise, softmax, cross_entropy_rows and layer_norm into windows of rows, bit for bit as unsplit', async () => {
    const { g, feeds } = logitsGraph();
    const whole = await runAll(g, feeds);
    // 12 KiB bindings: the 40 KiB logits (160 bytes a row) go in windows of 64 rows (the 4-byte targets
    // need 64 rows to reach SwiftShader's 256-byte offset alignment), 4 windows per kernel.
    process.env.KILN_MAX_STORAGE_BINDING = String(12 * 1024);
    const split = await runAll(g, feeds);
    const kdev = await getDevice();
    const parts = split.program.kernels.map((k) => splitKernel(k, { maxBytes: 12 * 1024, offsetAlignment: kdev.limits.minStorageBufferOffsetAlignment }, kdev.limits)?.length ?? 1);
    expect(parts).toEqual(split.program.kernels.map(() => 4)); // every kernel here reads or writes the logits
    expect([whole.dispatches, split.dispatches]).toEqual([6, 24]);
    for (const [name, data] of whole.got) expect(Array.from(split.got.get(name)!), name).toEqual(Array.from(data));
  });

  it('names each window in its kernel header', async () => {
    const { g } = logitsGraph();
    const kdev = await getDevice();
    const matmul = lowerGraph(g, kdev.limits).kernels.find((k) => k.node.op === 'matmul')!;
    const parts = splitKernel(matmul, { maxBytes: 12 * 1024, offsetAlignment: 256 }, kdev.limits)!;
    // x's rows are 64 bytes, the logits' 160: 72 rows (11.25 KiB) keep both offsets 256-aligned.
    const windows = [[0, 72], [72, 72], [144, 72], [216, 40]];
    expect(parts.map((p) => p.windows!.map((w) => w && `${w.offset}+${w.size}`))).toEqual(windows.map(([r0, r]) => [`${r0 * 64}+${r * 64}`, undefined, `${r0 * 160}+${r * 160}`]));
    expect(parts[1].kernel.code.split('\n')[0]).toContain('f32[72,40] meta{window="rows 72..144 of 256"}');
    expect(parts[3].kernel.code.split('\n')[0]).toContain('f32[40,40] meta{window="rows 216..256 of 256"}');
  });

  it('fails with KILN_E009 naming the tensor, its size, the limit and the kernel that cannot split it', async () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [256, 40] });
    const t = g.add('transpose', [x], { dim0: 0, dim1: 1 }, loc(21));
    const y = g.add('mul', [g.add('permute', [t], { dims: [1, 0] }, loc(22)), 2], {}, loc(23));
    g.setOutputs([{ name: 'y', node: y }]);
    const kdev = await getDevice();
    const program = lowerGraph(g, kdev.limits);
    process.env.KILN_MAX_STORAGE_BINDING = '8192';
    const error = await Executor.create(kdev, program).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toMatch(/^KILN_E009/);
    expect(error?.message).toContain('f32[256,40]');
    expect(error?.message).toContain('40.0 KiB, more than this GPU\'s maxStorageBufferBindingSize of 8.0 KiB');
    expect(error?.message).toContain('has no split rule');
    expect(error?.message).toContain('model.ts:2');
  });
});

describe('nanoGPT past the binding limit', () => {
  it('runs its logits and loss in windows under a 64 KiB binding, bit for bit as unsplit', async () => {
    const { default: createModel } = await import('../examples/nanogpt/model.ts');
    // vocab 256 at B4 T64: logits f32[4,64,256] are 256 KiB (1 KiB a row), 4 windows of 64 rows each.
    const model = createModel({ block_size: 64, vocab_size: 256, n_layer: 1, n_head: 2, n_embd: 16, dropout: 0, bias: true }).eval();
    const r = rng(5);
    const idx = fromHost({ type: { dtype: 'i32', shape: [4, 64] }, data: Int32Array.from({ length: 256 }, () => Math.floor(r() * 256)) });
    const targets = fromHost({ type: { dtype: 'i32', shape: [4, 64] }, data: Int32Array.from({ length: 256 }, (_, i) => (i % 7 === 0 ? -1 : Math.floor(r() * 256))) });
    const run = async () => {
      const { logits, loss } = await compile(model, { backend: 'webgpu' })(idx, targets);
      return [Array.from(await logits.data()), Array.from(await loss!.data())];
    };
    const whole = await run();
    process.env.KILN_MAX_STORAGE_BINDING = String(64 * 1024);
    const split = await run();
    expect(split).toEqual(whole);
  });
});

describe('embeddings past the binding limit', () => {
  it('looks up windows of ids into windows of rows, bit for bit as unsplit, and still reports a bad id', async () => {
    const g = new Graph();
    const table = g.add('input', [], { name: 'wte', dtype: 'f32', shape: [40, 64] });
    const idx = g.add('input', [], { name: 'idx', dtype: 'i32', shape: [4, 64] });
    const x = g.add('embedding', [table, idx], {}, loc(30));
    g.setOutputs([{ name: 'x', node: x }]);
    const r = rng(8);
    const ids = Int32Array.from({ length: 256 }, () => Math.floor(r() * 40));
    const feeds = new Map<Node, HostTensor>([
      [table, { type: table.type, data: Float32Array.from({ length: 40 * 64 }, () => r() - 0.5) }],
      [idx, { type: idx.type, data: ids }],
    ]);
    const whole = await runAll(g, feeds);
    // x is f32[4,64,64], 64 KiB (256 bytes a row); the 4-byte ids need 64 rows a window: 4 windows of 16 KiB.
    process.env.KILN_MAX_STORAGE_BINDING = String(16 * 1024);
    const split = await runAll(g, feeds);
    expect([whole.dispatches, split.dispatches]).toEqual([1, 4]);
    expect(Array.from(split.got.get('x')!)).toEqual(Array.from(whole.got.get('x')!));
    // An id out of range in the third window: reported at its place in the whole idx (window 2 starts at flat position 128).
    const kdev = await getDevice();
    const exec = await Executor.create(kdev, lowerGraph(g, kdev.limits));
    exec.run(new Map([...feeds, [idx, { type: idx.type, data: ids.map((v, i) => (i === 150 ? 99 : v)) }]]));
    const error = await exec.readIndexErrors();
    expect(error?.message).toBe('KILN_E011 model.ts:30:5: embedding index 99 at [2, 22] is outside [0, 40)');
    exec.destroy();
  });
});
