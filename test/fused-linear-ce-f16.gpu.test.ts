// Fused linear + cross-entropy under autocast f16 on lavapipe (shader-f16): lm_head's products run in
// f16 per chunk as in the unfused autocast graph (the logits cast up to f32 for the loss, d cast down to
// f16 for dx and dw), dw's f16 parts summed in f32 (passes/linear-ce.ts).
import './lavapipe.ts';

import { afterAll, describe, expect, it } from 'vitest';
import { loadBackend } from '../compiler/backends.ts';
import { fromHost } from '../index.ts';
import { interpret } from '../runtime/interpreter.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { COMPARED, type LmHeadCase, feedOf, lmHeadFeeds, lmHeadGraph, trainingPipeline } from './fused-linear-ce-cases.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';
import { asNumbers, relError } from './helpers.ts';

afterAll(releaseDevice);

const U = 2 ** -11; // f16's unit roundoff
/** The f32 bound of fused-linear-ce.gpu.test.ts (sums and WGSL's exp and log). */
const F32 = 1e-4;

describe.skipIf(!HAS_LAVAPIPE)('fused linear + cross-entropy under autocast f16 on lavapipe', () => {
  it("runs lm_head's products in f16; loss, dh and dw match the cpu's run of the same chunks and the unfused autocast graph", async () => {
    const c: LmHeadCase = { B: 2, T: 32, C: 32, V: 300, ignoreEvery: 5 };
    const feeds = lmHeadFeeds(c);
    const { fused, lowered } = trainingPipeline(lmHeadGraph(c), 'f16');
    const unfused = trainingPipeline(lmHeadGraph(c), 'f16', { fuse_linear_cross_entropy: false }).lowered;
    expect(fused.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
    expect(new Set(lowered.nodesOf('matmul').map((m) => m.type.dtype))).toEqual(new Set(['f16']));
    const cpu = interpret(lowered, feedOf(feeds), 'f32');
    const reference = interpret(unfused, feedOf(feeds), 'f32');
    const run = await (await loadBackend('webgpu')).prepare(lowered);
    const out = await run((n) => fromHost(feeds.get(String(n.attrs.name))!));
    for (const k of COMPARED) {
      const got = await out.get(k)!.data();
      const [vsCpu, vsUnfused] = [relError(got, asNumbers(cpu.get(k)!.data)), relError(got, asNumbers(reference.get(k)!.data))];
      console.log(`${k}: vs cpu ${vsCpu.toExponential(2)}, vs unfused ${vsUnfused.toExponential(2)}`);
      // The GPU's f16 products sum in f32 in another order than the cpu's f64: a logit, d or product may
      // round to the neighbouring f16 (one ulp, 2^-10 relative), which the loss, dx and dw carry at most
      // once each (2U of the largest value), on top of the f32 bound; against the unfused graph dw also
      // carries its chunks' f16 roundings (fused-linear-ce-autocast.test.ts): one U more.
      expect(vsCpu, k).toBeLessThan(2 * U + F32);
      expect(vsUnfused, k).toBeLessThan((k === 'grad.w' ? 3 : 2) * U + F32);
    }
  });
});
