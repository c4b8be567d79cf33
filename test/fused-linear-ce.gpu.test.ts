// Fused linear + cross-entropy on WebGPU (SwiftShader): the chunked graph the training pipeline lowers
// (matmuls, logsumexp_rows, cross_entropy_rows, the fused gradient kernel, concat) against the f64
// reference of the unfused graph, and logsumexp_rows alone against its f64 reference.

import { afterAll, describe, expect, it } from 'vitest';
import { loadBackend } from '../compiler/backends.ts';
import { KilnError, Tensor, fromHost } from '../index.ts';
import { GpuValue } from '../compiler/webgpu.ts';
import { lowerGraph } from '../codegen/index.ts';
import { planBuffers } from '../codegen/memory.ts';
import type { Graph } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { interpret } from '../runtime/interpreter.ts';
import { getDevice, releaseDevice, upload } from '../runtime/webgpu/index.ts';
import { COMPARED, type LmHeadCase, lmHeadFeeds, lmHeadGraph, trainingPipeline, withGradients } from './fused-linear-ce-cases.ts';
import { singleOp } from './op-graph.ts';
import { asNumbers, relError, rng } from './helpers.ts';

afterAll(releaseDevice);

/**
 * As the cpu test's f32 bound, (C + V + N) u relative to the largest value, plus WGSL's exp and log,
 * which may be a few ulp off (not correctly rounded) in each row's log-sum-exp and each probability:
 * for the largest case (32 + 1000 + 128) x 6e-8 = 7e-5; 1e-4 leaves the builtins' ulps room.
 */
const TOL = 1e-4;

async function runOnGpu(graph: Graph, feeds: Map<string, HostTensor>): Promise<Map<string, Float32Array | Float64Array>> {
  const run = await (await loadBackend('webgpu')).prepare(graph);
  const out = await run((node) => fromHost(feeds.get(String(node.attrs.name))!));
  const values = new Map<string, Float32Array | Float64Array>();
  for (const [name, t] of out) values.set(name, (await t.data()) as Float32Array);
  return values;
}

const CASES: Record<string, LmHeadCase> = {
  '20 rows in chunks of 8, 8, 4, every third target ignored': { B: 2, T: 10, C: 16, V: 50, ignoreEvery: 3 },
  'w tied to the embedding the hidden state reads': { B: 2, T: 10, C: 16, V: 50, tied: true, ignoreEvery: 4 },
  '128 rows, 1000 classes (rows longer than a workgroup), 32 chunks of 4': { B: 2, T: 64, C: 32, V: 1000, ignoreEvery: 7 },
};

describe('fused linear + cross-entropy on WebGPU', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: loss, dh and dw within ${TOL} of the unfused f64 reference`, async () => {
      const feeds = lmHeadFeeds(c);
      const { lowered } = trainingPipeline(lmHeadGraph(c));
      expect(lowered.nodesOf('logsumexp_rows').length).toBeGreaterThan(0);
      const reference = interpret(withGradients(lmHeadGraph(c)), (n) => feeds.get(String(n.attrs.name))!, 'f64');
      const got = await runOnGpu(lowered, feeds);
      const errors = Object.fromEntries(COMPARED.map((k) => [k, relError(got.get(k)!, asNumbers(reference.get(k)!.data))]));
      console.log(`${name}: ${JSON.stringify(errors)}`);
      for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(TOL);
    });
  }

  it('the memory planner gives every chunk the slots the last chunk freed: the 32-chunk step needs far less than the unfused one', () => {
    const c = CASES['128 rows, 1000 classes (rows longer than a workgroup), 32 chunks of 4'];
    const total = (g: Graph) => planBuffers(lowerGraph(g)).slotBytes.reduce((a, b) => a + b, 0);
    const fused = total(trainingPipeline(lmHeadGraph(c)).lowered);
    const unfused = total(trainingPipeline(lmHeadGraph(c), undefined, { fuse_linear_cross_entropy: false }).lowered);
    console.log(`planned bytes: unfused ${unfused}, fused ${fused}`);
    // The unfused step holds four [128, 1000] tensors (logits, softmax, one-hot, its cast: 512 KB each);
    // the fused one [4, 1000] chunks and four [1000, 32] dw's (running sum, part, next sum, output).
    // Measured 606612 against 2193412 bytes.
    expect(fused).toBeLessThan(unfused / 3);
  });

  it('logsumexp_rows matches its f64 reference over rows of 1, 255, 256, 257 and 5000 classes, large and spread values', async () => {
    const r = rng(3);
    for (const v of [1, 255, 256, 257, 5000]) {
      const data = Float32Array.from({ length: 3 * v }, (_, i) => (i < v ? 80 + r() * 10 : (r() * 2 - 1) * (i < 2 * v ? 1 : 30)));
      const { graph, feeds } = singleOp('logsumexp_rows', [{ type: { dtype: 'f32', shape: [3, v] }, data }]);
      const want = interpret(graph, (n) => feeds.get(n)!, 'f64').get('y')!.data;
      const run = await (await loadBackend('webgpu')).prepare(graph);
      const got = await (await run((n) => fromHost(feeds.get(n)!))).get('y')!.data();
      // Each output is log(sum) + max: the f32 sum of v terms and a few-ulp log, relative to |lse| >= about 1.
      expect(relError(got, asNumbers(want)), `V=${v}`).toBeLessThan(1e-5);
    }
  });
});

describe('a target outside [0, V) in the chunked loss', () => {
  const c: LmHeadCase = { B: 2, T: 10, C: 16, V: 50, ignoreEvery: 3 };
  const bad = () => {
    const feeds = lmHeadFeeds(c);
    const targets = Int32Array.from(feeds.get('targets')!.data);
    targets[13] = c.V; // row 5 of the second chunk: the message names its row in the batch
    feeds.set('targets', { type: feeds.get('targets')!.type, data: targets });
    return feeds;
  };
  const messageOf = async (call: () => Promise<unknown>) => {
    try {
      await call();
    } catch (e) {
      expect(e).toBeInstanceOf(KilnError);
      return (e as KilnError).message;
    }
    throw new Error('no error');
  };

  it('raises the cpu reference\'s E011 from the host check and, fed from the GPU, from kept_targets\' kernel', async () => {
    const { lowered } = trainingPipeline(lmHeadGraph(c));
    const feeds = bad();
    const expected = await messageOf(async () => interpret(lowered, (n) => feeds.get(String(n.attrs.name))!, 'f32'));
    expect(expected).toMatch(/^KILN_E011 .*cross_entropy target 50 at row 13 is outside \[0, 50\)$/);
    const run = await (await loadBackend('webgpu')).prepare(lowered);
    expect(await messageOf(() => run((n) => fromHost(feeds.get(String(n.attrs.name))!)))).toBe(expected);
    const kdev = await getDevice();
    const onGpu = (h: HostTensor) => new Tensor(h.type, { device: new GpuValue(kdev, upload(kdev, h), h.type) });
    expect(await messageOf(() => run((n) => (n.attrs.name === 'targets' ? onGpu(feeds.get('targets')!) : fromHost(feeds.get(String(n.attrs.name))!))))).toBe(expected);
  });
});
