// compileGenerator under autocast f16 on lavapipe (shader-f16): the caches hold f16 k and v, and the
// cached decode agrees with recomputing the window and with the CPU's f16 emulation.

import './lavapipe.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { compileGenerator } from '../compiler/generate.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { browserModel, run } from './generate-cases.ts';
import { relError } from './helpers.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';

afterAll(releaseDevice);

// f16 stores round to 2^-11 relative: the decode kernel and the flash kernel round the attention output
// each once, but from sums taken in another order, so a value can land one f16 ulp apart and move the
// logits through 4 layers; 1e-2 of the largest logit is a few such ulps (observed: 6.9e-4).
const TOL = 1e-2;

describe.skipIf(!HAS_LAVAPIPE)('compileGenerator under autocast f16 on lavapipe', () => {
  it('caches f16 k and v, and greedy generation matches recomputing the window and the cpu`s f16', async () => {
    const { model, chars } = browserModel();
    const prompt = [...'ROMEO:\n'].map((c) => chars.indexOf(c));
    const gen = await compileGenerator(model, { backend: 'webgpu', autocast: 'f16' });
    const decode = await gen.decodeStage(1, { greedy: true });
    expect(decode.nodes.filter((n) => n.op === 'input' && String(n.attrs.name).startsWith('k_cache.')).map((n) => n.type.dtype)).toEqual(['f16', 'f16', 'f16', 'f16']);
    const cached = await run(gen, prompt, { maxNewTokens: 10, greedy: true });
    const recomputed = await run(gen, prompt, { maxNewTokens: 10, greedy: true, cache: false });
    const cpu = await run(await compileGenerator(model, { backend: 'cpu', autocast: 'f16' }), prompt, { maxNewTokens: 10, greedy: true });
    expect(cached.tokens).toEqual(recomputed.tokens);
    expect(cached.tokens).toEqual(cpu.tokens);
    const worst = Math.max(...cached.steps.map((s, i) => Math.max(relError(s.logits!, recomputed.steps[i].logits!), relError(s.logits!, cpu.steps[i].logits!))));
    console.log(`f16 decode logits: worst relError ${worst.toExponential(2)} against recomputing and the cpu`);
    expect(worst).toBeLessThan(TOL);
  });
});
