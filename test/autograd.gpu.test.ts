// nanoGPT's gradients computed on the webgpu backend (SwiftShader in CI) against PyTorch's fixture.

import { afterAll, describe, expect, it } from 'vitest';
import { gradients } from '../compiler/autograd.ts';
import { fromHost } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { ATTENTION_VARIANTS, fixtureModel, loadFixture, relError } from './helpers.ts';

afterAll(releaseDevice);

// Fixture tolerance for gradients (test/fixtures/README.md): 1e-3 relative (max abs error / max abs value).
const TOL = 1e-3;

describe('gradients on the webgpu backend match PyTorch', async () => {
  const fx = await loadFixture();
  const [idx, targets] = [fromHost(fx.expected.get('idx')!), fromHost(fx.expected.get('targets')!)];
  for (const [label, override] of ATTENTION_VARIANTS) {
    it(`${label}: every grad.<param> within ${TOL}`, async () => {
      const model = await fixtureModel(override);
      const grads = await gradients(model, [idx, targets], { backend: 'webgpu' });
      const expected = [...fx.expected.keys()].filter((k) => k.startsWith('grad.'));
      expect(expected.length).toBe(grads.size);
      let worst = 0;
      for (const key of expected) {
        const got = grads.get(key.slice('grad.'.length));
        expect(got, key).toBeDefined();
        worst = Math.max(worst, relError(got!.data, fx.expected.get(key)!.data));
      }
      expect(worst).toBeLessThan(TOL);
    });
  }
});
