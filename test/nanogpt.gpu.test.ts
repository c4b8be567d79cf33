// nanoGPT on the webgpu backend (SwiftShader in CI) against PyTorch's fixture: eager and compiled,
// every attention variant. The tolerance is the fixtures' own: 1e-4 relative (max abs error over max abs value).

import { afterAll, describe, expect, it } from 'vitest';
import { compile, fromHost, useBackend } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { ATTENTION_VARIANTS, fixtureModel, loadFixture, relError } from './helpers.ts';

const TOL = 1e-4;

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

describe('nanoGPT on the webgpu backend matches PyTorch', async () => {
  const fx = await loadFixture();
  const idx = fromHost(fx.expected.get('idx')!);
  const targets = fromHost(fx.expected.get('targets')!);
  for (const [label, override] of ATTENTION_VARIANTS) {
    const model = await fixtureModel(override);
    it(`${label}: eager logits and loss within ${TOL}`, async () => {
      await useBackend('webgpu');
      try {
        const { logits, loss } = model.forward(idx, targets);
        expect(relError(await logits.data(), fx.expected.get('logits')!.data)).toBeLessThan(TOL);
        expect(relError(await loss!.data(), fx.expected.get('loss')!.data)).toBeLessThan(TOL);
      } finally {
        await useBackend('cpu');
      }
    });
    for (const fused of [false, true]) {
      it(`${label}: compiled${fused ? ' with attention fused' : ', unfused'}, logits and loss within ${TOL}`, async () => {
        const forward = compile(model, { backend: 'webgpu', passes: { fuse_attention: fused } });
        const { logits, loss } = await forward(idx, targets);
        expect(relError(await logits.data(), fx.expected.get('logits')!.data)).toBeLessThan(TOL);
        expect(relError(await loss!.data(), fx.expected.get('loss')!.data)).toBeLessThan(TOL);
        // A second call reuses the compilation and the uploaded weights, and gives the same numbers.
        const again = await forward(idx, targets);
        expect(await again.logits.data()).toEqual(await logits.data());
        expect(forward.stats.traces).toBe(1);
      });
    }
  }
});
