// Eager `loss.backward()` on the webgpu backend (SwiftShader in CI): nanoGPT's parameter gradients,
// computed op by op on the GPU and left there in `.grad`, against PyTorch's fixture.

import { afterAll, describe, expect, it } from 'vitest';
import { fromHost, gradsOf, useBackend } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { ATTENTION_VARIANTS, fixtureModel, loadFixture, relError } from './helpers.ts';

// Fixture tolerance for gradients (test/fixtures/README.md): 1e-3 relative (max abs error / max abs value).
const TOL = 1e-3;

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

describe('eager loss.backward() on the webgpu backend matches PyTorch', async () => {
  const fx = await loadFixture();
  const [idx, targets] = [fromHost(fx.expected.get('idx')!), fromHost(fx.expected.get('targets')!)];
  const expected = [...fx.expected.keys()].filter((k) => k.startsWith('grad.'));
  for (const [label, override] of ATTENTION_VARIANTS) {
    it(`${label}: every parameter's .grad within ${TOL}, and two backward() calls give twice that`, async () => {
      const model = await fixtureModel(override);
      await useBackend('webgpu');
      try {
        model.forward(idx, targets).loss!.backward();
        expect(model.transformer.wte.weight.grad!.device?.backend).toBe('webgpu');
        const grads = await gradsOf(model);
        expect(grads.size).toBe(expected.length);
        let worst = 0;
        for (const key of expected) worst = Math.max(worst, relError(grads.get(key.slice('grad.'.length))!.data, fx.expected.get(key)!.data));
        console.log(`eager webgpu, ${label}: largest gradient error ${worst.toExponential(2)}`);
        expect(worst).toBeLessThan(TOL);

        model.forward(idx, targets).loss!.backward();
        const twice = await gradsOf(model);
        for (const key of expected) {
          const doubled = fx.expected.get(key)!.data.map((x) => 2 * x);
          expect(relError(twice.get(key.slice('grad.'.length))!.data, doubled), key).toBeLessThan(TOL);
        }
      } finally {
        await useBackend('cpu');
      }
    });
  }
});
