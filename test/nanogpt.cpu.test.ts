import { describe, expect, it } from 'vitest';
import { compile, fromHost } from '../index.ts';
import { ATTENTION_VARIANTS, fixtureModel, loadFixture, relError } from './helpers.ts';

// Fixture tolerance (shared/fixtures/README.md): logits and loss within 1e-4 relative in float32.
const TOL = 1e-4;

describe('nanoGPT on the cpu backend matches PyTorch', async () => {
  const fx = await loadFixture();
  const idx = fromHost(fx.expected.get('idx')!);
  const targets = fromHost(fx.expected.get('targets')!);
  for (const [label, override] of ATTENTION_VARIANTS) {
    const model = await fixtureModel(override);
    it(`${label}: eager logits and loss within ${TOL}`, async () => {
      const { logits, loss } = model.forward(idx, targets);
      expect(relError(await logits.data(), fx.expected.get('logits')!.data)).toBeLessThan(TOL);
      expect(relError(await loss!.data(), fx.expected.get('loss')!.data)).toBeLessThan(TOL);
    });
    it(`${label}: compiled logits and loss within ${TOL}`, async () => {
      const forward = compile(model, { backend: 'cpu' });
      const { logits, loss } = await forward(idx, targets);
      expect(relError(await logits.data(), fx.expected.get('logits')!.data)).toBeLessThan(TOL);
      expect(relError(await loss!.data(), fx.expected.get('loss')!.data)).toBeLessThan(TOL);
    });
  }
});
