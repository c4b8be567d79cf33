import { describe, expect, it } from 'vitest';
import { compile, fromHost } from '../index.ts';
import createModel, { type GPTConfig } from '../examples/nanogpt/model.ts';
import { loadFixture, relError } from './helpers.ts';

// Fixture tolerance (shared/fixtures/README.md): logits and loss within 1e-4 relative in float32.
const TOL = 1e-4;
const variants: [string, Partial<GPTConfig>][] = [
  ['manual attention (flash false)', { flash: false }],
  ['sdpa isCausal (flash true)', { flash: true }],
  ['sdpa with an explicit mask (sdpa_mask)', { flash: true, sdpa_mask: true }],
];

describe('nanoGPT on the cpu backend matches PyTorch', async () => {
  const fx = await loadFixture();
  const idx = fromHost(fx.expected.get('idx')!);
  const targets = fromHost(fx.expected.get('targets')!);
  for (const [label, override] of variants) {
    const model = createModel({ ...(fx.config as Partial<GPTConfig>), ...override }).eval();
    model.loadStateDict(fx.weights, 'fixture');
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
