// Eager `loss.backward()` on the cpu backend: nanoGPT's parameter gradients against PyTorch's fixture,
// and torch's tape semantics (accumulation, zeroGrad, noGrad, freed graphs, tied weights).

import { describe, expect, it } from 'vitest';
import { AdamW, F, Parameter, fromHost, gradients, gradsOf, isGradEnabled, noGrad, tensor } from '../index.ts';
import { ATTENTION_VARIANTS, asNumbers, fixtureModel, loadFixture, relError } from './helpers.ts';

// Fixture tolerance for gradients (test/fixtures/README.md): 1e-3 relative (max abs error / max abs value).
const TOL = 1e-3;

const values = async (t: { data(): Promise<ArrayLike<number>> } | undefined) => Array.from(await t!.data());

describe('eager loss.backward() on the cpu backend matches PyTorch', async () => {
  const fx = await loadFixture();
  const [idx, targets] = [fromHost(fx.expected.get('idx')!), fromHost(fx.expected.get('targets')!)];
  const expectedGrads = [...fx.expected.keys()].filter((k) => k.startsWith('grad.'));

  /** The largest fixture error over every parameter's `.grad`, each scaled by `times` backward calls. */
  async function worstError(model: Awaited<ReturnType<typeof fixtureModel>>, times = 1): Promise<number> {
    expect(model.namedParameters().length).toBe(expectedGrads.length);
    let worst = 0;
    for (const [name, p] of model.namedParameters()) {
      const expected = fx.expected.get(`grad.${name}`)!.data.map((x) => x * times);
      worst = Math.max(worst, relError(asNumbers(await p.grad!.data()), expected));
    }
    return worst;
  }

  for (const [label, override] of ATTENTION_VARIANTS) {
    it(`${label}: every parameter's .grad within ${TOL}`, async () => {
      const model = await fixtureModel(override);
      const { loss } = model.forward(idx, targets);
      loss!.backward();
      const worst = await worstError(model);
      console.log(`eager cpu, ${label}: largest gradient error ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(TOL);
    });
  }

  it('the tied wte / lm_head weight gets the sum of both uses', async () => {
    const model = await fixtureModel({ flash: true });
    model.forward(idx, targets).loss!.backward();
    expect(model.lm_head.weight.grad).toBe(model.transformer.wte.weight.grad);
    const wte = model.transformer.wte.weight.grad!;
    expect(relError(asNumbers(await wte.data()), fx.expected.get('grad.transformer.wte.weight')!.data)).toBeLessThan(TOL);
    // A parameter used twice in one small graph: d/dw (w*w + 3w) = 2w + 3.
    const w = new Parameter({ type: { dtype: 'f32', shape: [3] }, data: Float32Array.from([1, -2, 0.5]) });
    w.mul(w).add(w.mul(3)).sum().backward();
    expect(await values(w.grad)).toEqual([5, -1, 4]);
  });

  it('gradients accumulate over backward() calls until zeroGrad()', async () => {
    const model = await fixtureModel({ flash: false });
    model.forward(idx, targets).loss!.backward();
    model.forward(idx, targets).loss!.backward();
    expect(await worstError(model, 2)).toBeLessThan(TOL);
    model.zeroGrad();
    expect(model.parameters().every((p) => p.grad === undefined)).toBe(true);
    model.forward(idx, targets).loss!.backward();
    expect(await worstError(model)).toBeLessThan(TOL);
  });

  it('a second backward() through a freed graph is refused; retainGraph keeps it', async () => {
    const w = new Parameter({ type: { dtype: 'f32', shape: [2] }, data: Float32Array.from([1, 2]) });
    const loss = w.mul(w).sum();
    loss.backward(undefined, { retainGraph: true });
    loss.backward();
    expect(await values(w.grad)).toEqual([4, 8]);
    expect(() => loss.backward()).toThrow(/^KILN_E011 .*eager-backward\.test\.ts:\d+:\d+: backward\(\) through a graph that an earlier backward\(\) freed/);
  });

  it('backward() on a non-scalar needs a gradient; with one it seeds sum(y * grad)', async () => {
    const x = tensor([1, 2, 3]);
    x.requiresGrad = true;
    const y = x.mul(x);
    expect(() => y.backward()).toThrow(/KILN_E011 .*backward\(\) without a gradient needs a 0-d tensor, got f32\[3\]/);
    y.backward(tensor([1, 0.5, -1]));
    expect(await values(x.grad)).toEqual([2, 2, -6]);
    expect(() => x.mul(2).backward(tensor([1, 2]))).toThrow(/KILN_E001 .*grad is f32\[2\], the tensor is f32\[3\]/);
  });

  it('tensors that depend on nothing requiring grad record no tape', () => {
    const a = tensor([1, 2, 3]);
    const b = a.mul(2).exp().sum();
    expect(b.gradFn).toBeUndefined();
    expect(b.requiresGrad).toBe(false);
    expect(() => b.backward()).toThrow(/KILN_E011 .*does not require grad/);
  });

  it('noGrad() records nothing, also for a model with parameters', async () => {
    const model = await fixtureModel({ flash: true });
    const { loss } = noGrad(() => {
      expect(isGradEnabled()).toBe(false);
      return model.forward(idx, targets);
    });
    expect(isGradEnabled()).toBe(true);
    expect(loss!.gradFn).toBeUndefined();
    expect(loss!.requiresGrad).toBe(false);
    // Comparisons and integer results never carry a tape either.
    const w = new Parameter({ type: { dtype: 'f32', shape: [2] }, data: Float32Array.from([1, 2]) });
    expect(w.gt(1).gradFn).toBeUndefined();
    expect(w.mul(2).gradFn?.op).toBe('mul');
  });

  it('detach() cuts the graph, and requiresGrad changes only on leaves', () => {
    const w = new Parameter({ type: { dtype: 'f32', shape: [2] }, data: Float32Array.from([1, 2]) });
    const y = w.mul(2);
    expect(y.detach().requiresGrad).toBe(false);
    expect(y.detach().mul(3).gradFn).toBeUndefined();
    expect(() => (y.requiresGrad = false)).toThrow(/KILN_E011 .*only be changed on a leaf/);
    expect(() => (tensor([1], [1], 'i32').requiresGrad = true)).toThrow(/KILN_E011 .*only float tensors can require grad/);
  });

  it('active dropout reuses its forward mask in backward', async () => {
    const x = tensor(Array.from({ length: 64 }, (_, i) => i / 10 + 1));
    x.requiresGrad = true;
    const y = F.dropout(x, 0.5, true);
    y.sum().backward();
    const kept = (await values(y)).map((v) => (v === 0 ? 0 : 2));
    expect(kept).toContain(0);
    expect(await values(x.grad)).toEqual(kept);
  });

  it('gradsOf(model) gives what gradients() gives, and AdamW steps from it', async () => {
    const model = await fixtureModel({ flash: true });
    model.forward(idx, targets).loss!.backward();
    const fromTape = await gradsOf(model);
    const traced = await gradients(model, [idx, targets]);
    expect([...fromTape.keys()].sort()).toEqual([...traced.keys()].sort());
    for (const [name, g] of fromTape) expect(relError(asNumbers(g.data), traced.get(name)!.data), name).toBeLessThan(1e-4);
    const before = model.transformer.wte.weight.host!.data;
    new AdamW(model, { lr: 1e-2 }).step(fromTape);
    expect(model.transformer.wte.weight.host!.data).not.toEqual(before);
  });
});
