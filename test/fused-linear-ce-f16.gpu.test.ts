// Fused linear + cross-entropy with f16 x and w (autocast) on lavapipe (shader-f16): the chunk's logits
// are f32 products of the f16 values (x and w cast up once), dx and dw rounded to f16 once at the end.
import './lavapipe.ts';

import { afterAll, describe, expect, it } from 'vitest';
import { loadBackend } from '../compiler/backends.ts';
import { fromHost } from '../index.ts';
import { interpret } from '../runtime/interpreter.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { COMPARED, type LmHeadCase, feedOf, lmHeadFeeds, lmHeadGraph, trainingPipeline, withGradients } from './fused-linear-ce-cases.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';
import { asNumbers, relError } from './helpers.ts';

afterAll(releaseDevice);

const U = 2 ** -11; // f16's unit roundoff
/** The f32 bound of fused-linear-ce.gpu.test.ts (sums and WGSL's exp and log). */
const F32 = 1e-4;

describe.skipIf(!HAS_LAVAPIPE)('fused linear + cross-entropy in f16 on lavapipe', () => {
  it('loss within the f32 bound of f64; dh and dw within one f16 rounding (u) of f64 and two (a flipped rounding) of the cpu f16 reference', async () => {
    const c: LmHeadCase = { B: 2, T: 32, C: 32, V: 300, f16: true, ignoreEvery: 5 };
    const feeds = lmHeadFeeds(c);
    const { fused, lowered } = trainingPipeline(lmHeadGraph(c));
    expect(lowered.nodes.some((n) => n.op === 'matmul' && n.type.dtype === 'f32' && n.type.shape[1] === c.V)).toBe(true);
    expect(fused.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
    const f64 = interpret(withGradients(lmHeadGraph(c)), feedOf(feeds), 'f64');
    const cpu = interpret(lowered, feedOf(feeds), 'f32');
    const run = await (await loadBackend('webgpu')).prepare(lowered);
    const out = await run((n) => fromHost(feeds.get(String(n.attrs.name))!));
    for (const k of COMPARED) {
      const got = await out.get(k)!.data();
      const [vsF64, vsCpu] = [relError(got, asNumbers(f64.get(k)!.data)), relError(got, asNumbers(cpu.get(k)!.data))];
      console.log(`${k}: vs f64 ${vsF64.toExponential(2)}, vs cpu ${vsCpu.toExponential(2)}`);
      expect(vsF64, k).toBeLessThan(k === 'loss' ? F32 : U + F32);
      expect(vsCpu, k).toBeLessThan(k === 'loss' ? F32 : 2 * U + F32);
    }
  });
});
