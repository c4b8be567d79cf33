import { describe, expect, it } from 'vitest';
import { KilnError, Module, type Tensor, compile, manualSeed, random, tensor } from '../index.ts';
import createModel, { type GPTConfig } from '../examples/nanogpt/model.ts';
import { relError } from './helpers.ts';

const SMALL: Partial<GPTConfig> = { block_size: 16, vocab_size: 11, n_layer: 2, n_head: 2, n_embd: 8, dropout: 0, bias: true };

function smallModel(override: Partial<GPTConfig> = {}) {
  manualSeed(7);
  return createModel({ ...SMALL, ...override }).eval();
}

/** Random token ids of shape [b, t]. */
function tokens(b: number, t: number, vocab = 11): Tensor {
  return tensor(Array.from({ length: b * t }, () => Math.floor(random() * vocab)), [b, t], 'i32');
}

const FUSED_TOL = 1e-5;

const fn = <A extends unknown[], R>(forward: (...args: A) => R) => Object.assign(new Module(), { forward });

describe('compile() caches one compilation per input signature', () => {
  it('traces once for two calls with the same shapes and counts the second as a cache hit', async () => {
    const forward = compile(smallModel(), { backend: 'cpu' });
    await forward(tokens(2, 5), tokens(2, 5));
    await forward(tokens(2, 5), tokens(2, 5));
    expect(forward.stats).toEqual({ traces: 1, recompiles: 0, cacheHits: 1 });
  });

  it('retraces for a new shape, counts a recompile, and reuses both compilations afterwards', async () => {
    const forward = compile(smallModel(), { backend: 'cpu' });
    const first = await forward(tokens(2, 5));
    const second = await forward(tokens(2, 7));
    expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 0 });
    expect(first.logits.shape).toEqual([2, 1, 11]);
    expect(second.logits.shape).toEqual([2, 1, 11]);
    await forward(tokens(2, 5));
    await forward(tokens(2, 7));
    expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 2 });
  });

  it('retraces for a new dtype', async () => {
    const forward = compile(fn((x: Tensor) => x.mul(2)), { backend: 'cpu' });
    const floats = await forward(tensor([1.5, 2], [2], 'f32'));
    const ints = await forward(tensor([3, 4], [2], 'i32'));
    expect(forward.stats.traces).toBe(2);
    expect(forward.stats.recompiles).toBe(1);
    expect(floats.dtype).toBe('f32');
    expect(Array.from(await floats.data())).toEqual([3, 4]);
    expect(ints.dtype).toBe('i32');
    expect(Array.from(await ints.data())).toEqual([6, 8]);
  });

  it('retraces when a non-tensor argument changes (targets null vs a tensor)', async () => {
    const forward = compile(smallModel(), { backend: 'cpu' });
    const idx = tokens(2, 5);
    await forward(idx, null);
    await forward(idx, tokens(2, 5));
    await forward(idx, null);
    expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 1 });
    expect(forward.last?.signature).toBe('i32[2,5], null');
  });

  it('retraces when a number argument changes, since it is a constant of the trace', async () => {
    const forward = compile(fn((x: Tensor, k: number) => x.mul(k)), { backend: 'cpu' });
    expect(Array.from(await (await forward(tensor([1, 2]), 3)).data())).toEqual([3, 6]);
    expect(Array.from(await (await forward(tensor([1, 2]), 5)).data())).toEqual([5, 10]);
    expect(forward.stats.traces).toBe(2);
  });
});

describe('compiled calls return what forward() returns', () => {
  it('gives nanoGPT {logits, loss} with all positions and a scalar loss when targets are given', async () => {
    const forward = compile(smallModel(), { backend: 'cpu' });
    const out = await forward(tokens(2, 5), tokens(2, 5));
    expect(Object.keys(out)).toEqual(['logits', 'loss']);
    expect(out.logits.shape).toEqual([2, 5, 11]);
    expect(out.loss?.shape).toEqual([]);
    expect(Number.isFinite((await out.loss!.data())[0])).toBe(true);
  });

  it('gives nanoGPT logits for the last position only and loss null when no targets are given', async () => {
    const forward = compile(smallModel(), { backend: 'cpu' });
    const out = await forward(tokens(3, 4));
    expect(out.logits.shape).toEqual([3, 1, 11]);
    expect(out.loss).toBeNull();
  });

  it('rebuilds nested arrays and objects, keeping non-tensor leaves as they were', async () => {
    const forward = compile(
      fn((x: Tensor) => ({ pair: [x.exp(), 3] as const, inner: { neg: x.neg(), tag: 'kept' }, nothing: null })),
      { backend: 'cpu' },
    );
    const out = await forward(tensor([0, 1]));
    expect(out.pair[1]).toBe(3);
    expect(out.inner.tag).toBe('kept');
    expect(out.nothing).toBeNull();
    expect(Array.from(await out.pair[0].data())).toEqual([1, Math.fround(Math.E)]);
    expect(Array.from(await out.inner.neg.data())).toEqual([-0, -1]);
    expect(forward.last!.passes.graph.outputs.map((o) => o.name)).toEqual(['pair.0', 'inner.neg']);
  });
});

describe('passes are switched by name', () => {
  /** forward computes exp(x) and never uses it. */
  const withDeadValue = () =>
    fn((x: Tensor) => {
      x.exp();
      return x.neg();
    });

  it('removes an unused value by default (dce on)', async () => {
    const forward = compile(withDeadValue(), { backend: 'cpu' });
    const c = await forward.lower(tensor([1, 2]));
    expect(c.trace.graph.nodesOf('exp')).toHaveLength(1);
    expect(c.passes.graph.nodesOf('exp')).toHaveLength(0);
    expect(c.passes.ran).toContain('dce');
  });

  it('keeps the unused value with passes: { dce: false }, and still computes the same result', async () => {
    const forward = compile(withDeadValue(), { backend: 'cpu', passes: { dce: false } });
    const y = await forward(tensor([1, 2]));
    const c = forward.last!;
    expect(c.passes.graph.nodesOf('exp')).toHaveLength(1);
    expect(c.passes.ran).not.toContain('dce');
    expect(Array.from(await y.data())).toEqual([-1, -2]);
  });

  it('refuses an unknown pass name at compile() with KILN_E011 listing the known passes', () => {
    let error: unknown;
    try {
      compile(withDeadValue(), { backend: 'cpu', passes: { dse: false } });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KilnError);
    expect((error as KilnError).code).toBe('KILN_E011');
    expect((error as KilnError).message).toMatch(/unknown pass "dse"; passes are: .*\bdce\b/);
  });
});

describe('compiled results on the cpu backend match eager results', () => {
  const variants: [string, Partial<GPTConfig>][] = [
    ['manual attention', { flash: false }],
    ['sdpa isCausal', { flash: true }],
    ['sdpa with a mask', { flash: true, sdpa_mask: true }],
  ];
  for (const [label, override] of variants) {
    const model = smallModel(override);
    const idx = tokens(2, 6);
    const targets = tokens(2, 6);

    it(`${label}: with no passes, logits and loss are bit-identical to eager`, async () => {
      const eager = model.forward(idx, targets);
      const compiled = await compile(model, { backend: 'cpu', pipeline: [] })(idx, targets);
      expect(await compiled.logits.data()).toEqual(await eager.logits.data());
      expect(await compiled.loss!.data()).toEqual(await eager.loss!.data());
    });

    // Fusion changes the order of float sums, so the default pipeline agrees to f32 rounding, not bit for bit.
    it(`${label}: with kiln's default passes, logits and loss agree with eager within ${FUSED_TOL}`, async () => {
      const eager = model.forward(idx, targets);
      const compiled = await compile(model, { backend: 'cpu' })(idx, targets);
      expect(relError(await compiled.logits.data(), await eager.logits.data())).toBeLessThan(FUSED_TOL);
      expect(relError(await compiled.loss!.data(), await eager.loss!.data())).toBeLessThan(FUSED_TOL);
    });
  }

  it('uses weights loaded after compile() on the next call', async () => {
    const model = smallModel();
    const forward = compile(model, { backend: 'cpu' });
    const idx = tokens(1, 4);
    const before = await (await forward(idx)).logits.data();
    const state = new Map([...model.stateDict()].map(([k, v]) => [k, { type: v.type, data: (v.data as Float32Array).map((x) => x * 2) }]));
    model.loadStateDict(state);
    const after = await (await forward(idx)).logits.data();
    expect(after).not.toEqual(before);
    expect(after).toEqual(await model.forward(idx).logits.data());
    expect(forward.stats.traces).toBe(1);
  });
});

describe('buffers are guarded', () => {
  it('retraces when a buffer gets new values (it was folded in as a constant)', async () => {
    const model = createModel({ n_layer: 1, n_head: 2, n_embd: 8, block_size: 8, vocab_size: 11, flash: false }).eval();
    const idx = tensor([1, 2, 3, 4], [1, 4], 'i32');
    const forward = compile(model, { backend: 'cpu' });
    await forward(idx);
    await forward(idx);
    expect(forward.stats.traces).toBe(1);
    const key = 'transformer.h.0.attn.bias';
    const flipped = Float32Array.from(model.stateDict().get(key)!.data);
    flipped[1] = 1; // query 0 now also sees key 1: no longer causal
    model.loadStateDict(new Map([...model.stateDict(), [key, { type: { dtype: 'f32', shape: [1, 1, 8, 8] }, data: flipped }]]));
    await forward(idx);
    expect(forward.stats.traces).toBe(2);
    expect(forward.last!.passes.decisions[0].kernel).toBe('flash_masked');
  });
});
