// The autotuner (runtime/webgpu/autotune.ts, codegen/tuning.ts) on SwiftShader: it picks the faster of
// two candidates made different on purpose, lowering uses what it picked, compile({ autotune: true })
// gives the rule's results, and picks survive a new device through the disk cache. Every matmul
// candidate is a MATMUL_TILINGS entry, each tested against the f64 reference in matmul.gpu.test.ts.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { type Candidate, type TuningSite, picksOf, tunedLimits, tuningKey } from '../codegen/tuning.ts';
import { elementwiseLowerings } from '../codegen/wgsl/elementwise.ts';
import { MATMUL_TILINGS, matmulKernel, matmulTuning } from '../codegen/wgsl/linalg.ts';
import type { KernelPlan, KernelRequest } from '../codegen/wgsl/plan.ts';
import { Graph, type Node, isNode } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { autotuneGraph, measurePick } from '../runtime/webgpu/autotune.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { H100_LIMITS, matmulGraph } from './matmul-cases.ts';
import { tempAutotuneCache } from './autotune-cache.ts';
import { rng } from './helpers.ts';

let cache: ReturnType<typeof tempAutotuneCache>;
beforeEach(() => (cache = tempAutotuneCache()));
afterEach(() => cache.remove());
afterAll(releaseDevice);

const requestOf = (node: Node, limits = H100_LIMITS): KernelRequest => ({ inputs: node.inputs.map((x) => (isNode(x) ? x.type : x)), attrs: node.attrs, out: node.type, limits });

/** The same elementwise kernel, once plain and once computing its value `extra` more times (redundant work the compiler cannot drop: a loop-carried sum). */
function redundant(plan: KernelPlan, extra: number): KernelPlan {
  const body = plan.body.replace(/out\[gid\] = (.*);/, (_, value: string) =>
    `var v = ${value};\n  var waste = 0.0;\n  for (var r = 0u; r < ${extra}u; r = r + 1u) { waste = waste + sin(v + f32(r)); }\n  out[gid] = select(v, v + waste, waste > 1e30);`,
  );
  if (body === plan.body) throw new Error('the elementwise body changed: update redundant()');
  return { ...plan, body };
}

describe('the autotuner', () => {
  it('declares every matmul tiling that fits the device as a candidate, and the rule among them', () => {
    const { node } = matmulGraph([12, 1024, 768], [3072, 768], false, true);
    const candidates = matmulTuning.candidates(requestOf(node));
    expect(candidates.map((c) => c.name)).toEqual(Object.keys(MATMUL_TILINGS));
    expect(matmulTuning.rule(requestOf(node))).toBe('medium');
    // Each candidate is the tiled kernel at its tiling (each tested against the reference in matmul.gpu.test.ts).
    for (const c of candidates) expect(c.plan()).toEqual(matmulKernel(requestOf(node), MATMUL_TILINGS[c.name as keyof typeof MATMUL_TILINGS]));
    // WebGPU's default 16 KiB of workgroup memory leaves out the 33 KiB large tiles.
    expect(matmulTuning.candidates(requestOf(node, { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256 })).map((c) => c.name)).toEqual(['medium', 'small']);
  });

  it('picks the faster of two candidates whose speeds differ on purpose, in either order', async () => {
    const kdev = await getDevice();
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [64, 64] });
    const y = g.add('exp', [x]);
    const req = requestOf(y, kdev.limits);
    const plain: Candidate = { name: 'plain', plan: () => elementwiseLowerings.exp(req) };
    const slow: Candidate = { name: 'redundant', plan: () => redundant(elementwiseLowerings.exp(req), 2000) };
    for (const candidates of [[slow, plain], [plain, slow]]) {
      const site: TuningSite = { op: 'exp', candidates: () => candidates, rule: () => candidates[0].name };
      const pick = (await measurePick(kdev, y, req, site))!;
      expect(pick.choice).toBe('plain');
      // 2000 sines an element against one exp: far slower on any device (SwiftShader: ~100x).
      expect(pick.ns.redundant).toBeGreaterThan(3 * pick.ns.plain);
      expect(pick.rule).toBe(candidates[0].name);
    }
  });

  it('lowers with what it picked, and its results are the rule\'s kernel\'s', async () => {
    const kdev = await getDevice();
    const { graph, node } = matmulGraph([2, 96, 40], [40, 72], false, false);
    const limits = await autotuneGraph(kdev, graph);
    const pick = picksOf(limits).get(tuningKey('matmul', requestOf(node, limits)))!;
    expect(pick.from).toBe('measured');
    expect(Object.keys(pick.ns)).toEqual(matmulTuning.candidates(requestOf(node, kdev.limits)).map((c) => c.name));
    expect(pick.ns[pick.choice]).toBe(Math.min(...Object.values(pick.ns)));
    // A pick made by hand shows in the lowered kernel; the device's own limits keep the rule's.
    picksOf(limits).set(tuningKey('matmul', requestOf(node, limits)), { ...pick, choice: 'largeK8' });
    expect(lowerGraph(graph, limits).kernels[0].code).toContain('a 128x128 output tile');
    expect(lowerGraph(graph, kdev.limits).kernels[0].code).toContain('a 128x64 output tile'); // the rule's medium
    // Every tiling sums K in the same order: the tuned kernel's bits are the rule's.
    const r = rng(2);
    const feeds = new Map(graph.nodes.filter((n) => n.op === 'input').map((n) => [n, { type: n.type, data: Float32Array.from({ length: n.type.shape.reduce((a, b) => a * b, 1) }, () => r() - 0.5) }]));
    const results = [];
    for (const l of [limits, kdev.limits]) {
      const exec = await Executor.create(kdev, lowerGraph(graph, l));
      results.push(Array.from(await readback(kdev, exec.run(feeds).get('c')!, node.type)));
      exec.destroy();
    }
    expect(results[0]).toEqual(results[1]);
  });

  it('keeps its picks on disk per adapter and kiln version, and a new device reads them instead of measuring', async () => {
    const first = await getDevice();
    const { graph, node } = matmulGraph([64, 48], [80, 48], false, true);
    const measured = picksOf(await autotuneGraph(first, graph)).get(tuningKey('matmul', requestOf(node, tunedLimits(first.limits))))!;
    const files = readdirSync(join(cache.dir, 'autotune'));
    expect(files).toHaveLength(1);
    expect(files[0]).toContain('kiln-0.');
    const saved = JSON.parse(readFileSync(join(cache.dir, 'autotune', files[0]), 'utf8'));
    expect(saved.device).toBe(first.description);
    await releaseDevice();
    const second = await getDevice();
    expect(second).not.toBe(first);
    const limits = await autotuneGraph(second, graph);
    const cached = picksOf(limits).get(tuningKey('matmul', requestOf(node, limits)))!;
    expect(cached).toEqual({ ...measured, from: 'disk cache' });
  });
});

describe('compile({ autotune: true })', () => {
  it('measures each distinct product of nanoGPT once and gives the logits of the rule\'s kernels, bit for bit; KILN_AUTOTUNE=1 turns it on when the option is unset', async () => {
    const { default: createModel } = await import('../examples/nanogpt/model.ts');
    const { compile, fromHost } = await import('../index.ts');
    const model = createModel({ block_size: 16, vocab_size: 96, n_layer: 1, n_head: 2, n_embd: 32, dropout: 0, bias: true }).eval();
    const r = rng(4);
    const idx = fromHost({ type: { dtype: 'i32', shape: [2, 16] }, data: Int32Array.from({ length: 32 }, () => Math.floor(r() * 96)) });
    const logitsOf = async (options: object) => Array.from(await (await compile(model, { backend: 'webgpu', ...options })(idx)).logits.data());
    const kdev = await getDevice();
    const picks = picksOf(tunedLimits(kdev.limits));
    const before = new Set(picks.keys()); // the tests above measured some products on this device
    const ruled = await logitsOf({});
    expect(picks.size).toBe(before.size); // without autotune nothing is measured
    expect(await logitsOf({ autotune: true })).toEqual(ruled);
    // qkv, attention's projection, MLP up and down, lm_head at the last position: 5 distinct products (attention's own are fused).
    const added = [...picks.keys()].filter((k) => !before.has(k));
    expect(added.map((k) => k.slice(0, k.indexOf('(')))).toEqual(['matmul', 'matmul', 'matmul', 'matmul', 'matmul']);
    const file = readdirSync(join(cache.dir, 'autotune'))[0];
    expect(Object.keys(JSON.parse(readFileSync(join(cache.dir, 'autotune', file), 'utf8')).picks).sort()).toEqual([...picks.keys()].sort());
    // KILN_AUTOTUNE=1 with the option unset: a new batch size's products are measured too.
    process.env.KILN_AUTOTUNE = '1';
    try {
      const one = fromHost({ type: { dtype: 'i32', shape: [1, 16] }, data: Int32Array.from({ length: 16 }, () => Math.floor(r() * 96)) });
      const count = picks.size;
      await compile(model, { backend: 'webgpu' })(one);
      expect(picks.size).toBe(count + 5);
    } finally {
      delete process.env.KILN_AUTOTUNE;
    }
  });
});
