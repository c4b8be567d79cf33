// kiln profile: GPU time per kernel, compiled against eager, from timestamps (or the wall clock).
// Its printout for a wall-clock adapter and its refusals, which need no GPU: profile.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { type Profile, profileCommand } from '../compiler/cli/profile.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import type { HostTensor } from '../ir/host.ts';
import { Executor, type Feed, getDevice, readback, releaseDevice, runKernel, upload } from '../runtime/webgpu/index.ts';
import { timeEagerKernels } from '../runtime/webgpu/eager.ts';
import { KernelTimer } from '../runtime/webgpu/timing.ts';
import { NANOGPT, printed } from './cli-capture.ts';

afterAll(releaseDevice);

const TINY = '{"n_layer":1,"n_head":1,"n_embd":8,"block_size":8,"vocab_size":11}';
const profile = (...flags: string[]) => printed(profileCommand, [NANOGPT, '--config', TINY, '--batch', '1', '--seq', '4', ...flags]);

/** (x + y) * x on [4]: two kernels. */
function twoKernels(): { graph: Graph; feeds: Map<Node, Feed> } {
  const graph = new Graph();
  const x = graph.add('input', [], { name: 'x', dtype: 'f32', shape: [4] });
  const y = graph.add('input', [], { name: 'y', dtype: 'f32', shape: [4] });
  graph.setOutputs([{ name: 'z', node: graph.add('mul', [graph.add('add', [x, y]), x]) }]);
  const host = { type: x.type, data: new Float32Array([1, 2, 3, 4]) };
  return { graph, feeds: new Map([[x, host], [y, host]]) };
}

describe('per-kernel timing in the runtime', () => {
  for (const clock of ['timestamp-query', 'wall-clock'] as const) {
    it(`times each kernel of a run by ${clock}, in dispatch order, without changing the result`, async () => {
      const kdev = await getDevice();
      const { graph, feeds } = twoKernels();
      const exec = await Executor.create(kdev, lowerGraph(graph));
      const timer = new KernelTimer(kdev, clock);
      const outs = exec.run(feeds, timer);
      const times = await timer.collect();
      expect(times.map((t) => t.kernel.node.op)).toEqual(['add', 'mul']);
      for (const t of times) expect(t.ns).toBeGreaterThanOrEqual(0);
      expect([...(await readback(kdev, outs.get('z')!, graph.outputs[0].node.type))]).toEqual([2, 8, 18, 32]);
      // collect() starts afresh: a second run reports its own two kernels.
      exec.run(feeds, timer);
      expect(await timer.collect()).toHaveLength(2);
      timer.destroy();
      exec.destroy();
    });
  }
});

describe('per-kernel timing in eager mode', () => {
  for (const clock of ['timestamp-query', 'wall-clock'] as const) {
    it(`times each eager kernel by ${clock} while a timer is set, and none after`, async () => {
      const kdev = await getDevice();
      const { graph, feeds } = twoKernels();
      const [add, mul] = lowerGraph(graph).kernels;
      const x = upload(kdev, feeds.get(graph.nodes[0]) as HostTensor);
      const timer = new KernelTimer(kdev, clock);
      timeEagerKernels(timer);
      const sum = runKernel(kdev, add, [x, x]);
      const product = runKernel(kdev, mul, [sum, x]);
      timeEagerKernels(null);
      runKernel(kdev, add, [x, x]);
      const times = await timer.collect();
      expect(times.map((t) => t.kernel.node.op)).toEqual(['add', 'mul']);
      expect([...(await readback(kdev, product, mul.node.type))]).toEqual([2, 8, 18, 32]);
      timer.destroy();
    });
  }
});

describe('kiln profile', () => {
  it('reports every compiled kernel and every eager op with its source line, shares, per-op totals and the eager/compiled ratio', async () => {
    const p = JSON.parse(await profile('--json', '--iters', '3', '--warmup', '1')) as Profile;
    expect(p.clock).toBe('timestamp-query'); // SwiftShader has it
    expect(p.adapter).toMatch(/swiftshader/i);
    expect([p.iters, p.warmup, p.input]).toEqual([3, 1, [1, 4]]);
    const { compiled, eager } = p.modes;
    expect(compiled && eager).toBeTruthy();
    for (const m of [compiled!, eager!]) {
      expect(m.kernels.length).toBeGreaterThan(10);
      for (const k of m.kernels) {
        expect(k.loc).toMatch(/^examples\/nanogpt\/model\.ts:\d+:\d+$/);
        expect(k.medianUs).toBeGreaterThanOrEqual(0);
      }
      expect(m.kernels.reduce((a, k) => a + k.share, 0)).toBeCloseTo(1, 5);
      expect(Object.values(m.byOp).reduce((a, g) => a + g.count, 0)).toBe(m.kernels.length);
      expect(m.totalUs).toBeGreaterThan(0);
    }
    // Compiled kernels are named by the IR value they compute, eager ops by their place in forward().
    expect(compiled!.kernels.every((k) => /^%\d+$/.test(k.id))).toBe(true);
    expect(eager!.kernels.map((k) => k.id).slice(0, 3)).toEqual(['#1', '#2', '#3']);
    // Fusion shows: attention is one fused kernel compiled, one sdpa op eager.
    expect(compiled!.byOp.fused_attention?.count).toBe(1);
    expect(eager!.byOp.sdpa?.count).toBe(1);
    expect(p.eagerOverCompiled).toBeCloseTo(eager!.totalUs / compiled!.totalUs, 10);
  });

  it('prints the tables: adapter and clock, each kernel, op kinds side by side, the totals', async () => {
    const text = await profile('--iters', '2', '--warmup', '1', '--mode', 'both');
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^kiln profile examples\/nanogpt\/model\.ts {2}input \[1,4\] {2}adapter: .*SwiftShader/i);
    expect(lines[1]).toBe('clock: GPU timestamps (timestamp-query), one compute pass per kernel; median of 2 forwards after 1 warm-up');
    expect(lines).toContain('by op kind (summed medians, count):');
    expect(text).toMatch(/\n +id  op +loc +median µs  share\n/);
    expect(text).toMatch(/\n +%\d+ +fused_attention +examples\/nanogpt\/model\.ts:\d+:\d+ +\d+\.\d +\d+\.\d%\n/);
    expect(lines.at(-1)).toMatch(/^total GPU time per forward \(median\): eager \d+\.\d µs, compiled \d+\.\d µs; eager\/compiled \d+\.\d\dx$/);
  });

  it('profiles one mode alone, without a ratio', async () => {
    const p = JSON.parse(await profile('--json', '--iters', '1', '--warmup', '0', '--mode', 'compiled')) as Profile;
    expect(Object.keys(p.modes)).toEqual(['compiled']);
    expect(p.eagerOverCompiled).toBeUndefined();
  });
});
