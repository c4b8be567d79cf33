// compile(model, { dynamic }): one trace serves every sequence length T (compiler/dynamic.ts), on the cpu
// backend. The reference for each T is a static compile at that T: the instantiated graph is the graph a
// trace at T gives (asserted on its printed text), so the passes and the interpreter do the same
// operations in the same order and the logits must be bit-equal, no tolerance. Against eager nanoGPT
// (an independent reference: no fusion) the bound is compile.test.ts's 1e-5 for fused attention.

import { describe, expect, it } from 'vitest';
import { F, KilnError, Module, type Tensor, compile, manualSeed, tensor } from '../index.ts';
import { setLogChannels } from '../ir/log.ts';
import { printGraph } from '../ir/text.ts';
import { traceModule } from '../compiler/tracer.ts';
import { causalPrefix } from '../passes/causal.ts';
import { ATTENTION_VARIANTS, fixtureModel, relError, rng } from './helpers.ts';
import { capturedStderr } from './log-capture.ts';

const lines = capturedStderr();
/** The fixture's block_size. */
const BLOCK = 32;

/** Token ids [2, t] below the fixture's vocabulary of 96. */
function tokens(t: number, seed = t): Tensor {
  const r = rng(seed);
  return tensor(Array.from({ length: 2 * t }, () => Math.floor(r() * 96)), [2, t], 'i32');
}

/** A compiled forward's logits at these tokens. */
async function logitsOf(forward: (idx: Tensor) => Promise<{ logits: Tensor }>, idx: Tensor): Promise<Float32Array> {
  return (await (await forward(idx)).logits.data()) as Float32Array;
}

const fn = <A extends unknown[], R>(forward: (...args: A) => R) => Object.assign(new Module(), { forward });

async function thrownAsync(p: Promise<unknown>): Promise<KilnError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(KilnError);
  return e as KilnError;
}

describe('compile(model, { dynamic: true }) serves every length from one trace', () => {
  for (const [label, override] of ATTENTION_VARIANTS) {
    it(`${label}: T = 1, 2, 5 and block_size from one trace, each bit-equal to a static compile at that T`, async () => {
      const model = await fixtureModel(override);
      const dynamic = compile(model, { backend: 'cpu', dynamic: true });
      for (const t of [5, 1, 2, BLOCK]) {
        const got = await logitsOf(dynamic, tokens(t));
        const want = await logitsOf(compile(model, { backend: 'cpu', dynamic: false }), tokens(t));
        expect(got).toEqual(want);
        // The instantiated graph is the one a trace at T gives, line for line.
        expect(printGraph(dynamic.last!.trace.graph)).toBe(printGraph(traceModule(model, [tokens(t)]).graph));
        expect(dynamic.last!.dynamic?.length).toBe(t);
      }
      expect(dynamic.stats).toEqual({ traces: 1, recompiles: 0, cacheHits: 3 });
      const { symbolic } = dynamic.last!.dynamic!;
      expect(symbolic.range).toMatchObject({ min: 1, max: BLOCK });
      expect(symbolic.lengths).toEqual([5, BLOCK, 17]);
      // Fused attention at every T: the causal kernel, proved (or declared) for each length.
      const kernels = dynamic.last!.passes.graph.nodes.filter((n) => n.op === 'fused_attention').map((n) => n.meta?.kernel);
      expect(kernels).toEqual(['flash_causal', 'flash_causal']);
    });
  }

  it('in training, with dropout and targets: loss and logits bit-equal to a static compile under the same seed', async () => {
    const model = (await fixtureModel({ flash: false, dropout: 0.2 })).train();
    const dynamic = compile(model, { backend: 'cpu', dynamic: true });
    for (const t of [6, 3, BLOCK]) {
      manualSeed(3);
      const got = await dynamic(tokens(t), tokens(t, 99));
      manualSeed(3);
      const want = await compile(model, { backend: 'cpu', dynamic: false })(tokens(t), tokens(t, 99));
      expect(await got.loss!.data()).toEqual(await want.loss!.data());
      expect(await got.logits.data()).toEqual(await want.logits.data());
    }
    expect(dynamic.stats.traces).toBe(1);
  });

  it('matches eager nanoGPT at T = 7 within 1e-5 (fused attention against the unfused chain)', async () => {
    const model = await fixtureModel({ flash: false });
    const got = await logitsOf(compile(model, { backend: 'cpu', dynamic: true }), tokens(7));
    expect(relError(got, await model.forward(tokens(7)).logits.data())).toBeLessThan(1e-5);
  });

  it('proves the mask buffer causal for every T at once, and records it on the compilation', async () => {
    const dynamic = compile(await fixtureModel({ flash: false }), { backend: 'cpu', dynamic: true });
    await dynamic(tokens(3));
    const causal = dynamic.last!.dynamic!.causal;
    expect(causal.map((c) => c.upTo)).toEqual([BLOCK, BLOCK]);
    expect(causal[0].reason).toMatch(/lower-triangular over its full \[32,32\], so every leading square \[:T, :T\] with T <= 32 is causal/);
    expect(causal[0].loc?.file).toBe('examples/nanogpt/model.ts');
  });

  it('keeps the fused causal kernel only where a mask is causal: one whose lower-right block is not triangular', async () => {
    const model = await fixtureModel({ flash: false });
    // bias[20, 25] = 1: the leading squares [:T, :T] are causal for T <= 25 only.
    for (const block of model.transformer.h) block.attn.bias.host!.data[20 * BLOCK + 25] = 1;
    const dynamic = compile(model, { backend: 'cpu', dynamic: true });
    const kernelsAt = async (t: number) => {
      const got = await logitsOf(dynamic, tokens(t));
      expect(got).toEqual(await logitsOf(compile(model, { backend: 'cpu', dynamic: false }), tokens(t)));
      expect(relError(got, await model.forward(tokens(t)).logits.data())).toBeLessThan(1e-5);
      return dynamic.last!.passes.graph.nodes.filter((n) => n.op === 'fused_attention').map((n) => n.meta?.kernel);
    };
    expect(await kernelsAt(25)).toEqual(['flash_causal', 'flash_causal']);
    expect(await kernelsAt(26)).toEqual(['flash_masked', 'flash_masked']);
    expect(await kernelsAt(BLOCK)).toEqual(['flash_masked', 'flash_masked']);
    const causal = dynamic.last!.dynamic!.causal;
    expect(causal.map((c) => c.upTo)).toEqual([25, 25]);
    expect(causal[0].reason).toBe('mask %30 is causal only for T <= 25: element [20, 25] is 0, so at T > 25 query 20 attends to key 25');
    expect(dynamic.stats.traces).toBe(1);
  });

  it('refuses a length past block_size with a coded error naming the range and what bounds it', async () => {
    const dynamic = compile(await fixtureModel({ flash: false }), { backend: 'cpu', dynamic: true });
    await dynamic(tokens(4));
    const e = await thrownAsync(dynamic(tokens(BLOCK + 1)));
    expect(e.code).toBe('KILN_E014');
    expect(e.message).toMatch(/^KILN_E014 idx has length 33 in dim 1, outside \[1, 32\], the lengths this compiled model serves \(.*examples\/nanogpt\/model\.ts:\d+.*32 rows\); pass between 1 and 32 positions$/);
    expect((await thrownAsync(dynamic(tensor([], [2, 0], 'i32')))).code).toBe('KILN_E014');
    expect(dynamic.stats.traces).toBe(1);
  });

  it('refuses arguments whose lengths disagree', async () => {
    const dynamic = compile(await fixtureModel({ flash: true }), { backend: 'cpu', dynamic: true });
    const e = await thrownAsync(dynamic(tokens(4), tokens(5)));
    expect(e.message).toBe('KILN_E014 dynamic compilation needs one length in dim 1: idx is i32[2,4] but targets is i32[2,5]; give them the same length');
  });

  it('retraces when a buffer it folded in is written, as a static compile does', async () => {
    const model = await fixtureModel({ flash: false });
    const dynamic = compile(model, { backend: 'cpu', dynamic: true });
    await dynamic(tokens(4));
    model.transformer.h.at(0).attn.bias.host!.data[1] = 1; // query 0 now sees key 1: not causal at T >= 2
    const got = await logitsOf(dynamic, tokens(4));
    expect(dynamic.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 0 });
    expect(got).toEqual(await logitsOf(compile(model, { backend: 'cpu', dynamic: false }), tokens(4)));
    expect(dynamic.last!.passes.graph.nodes.filter((n) => n.op === 'fused_attention').map((n) => n.meta?.kernel)).toEqual(['flash_masked', 'flash_causal']);
  });
});

describe('with dynamic unset, a second length makes the dim dynamic (automatic dynamic shapes)', () => {
  it('recompiles exactly once after a second length, logs it, and serves later lengths from that trace', async () => {
    setLogChannels('recompiles');
    const model = await fixtureModel({ flash: true });
    const forward = compile(model, { backend: 'cpu' });
    for (const t of [5, 7, 9, 1, BLOCK, 5]) {
      expect(await logitsOf(forward, tokens(t))).toEqual(await logitsOf(compile(model, { backend: 'cpu', dynamic: false }), tokens(t)));
    }
    expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 4 });
    expect(lines).toEqual(["[kiln:recompiles] dim 1 of forward()'s arguments changed length (idx: i32[2,5] -> i32[2,7]): marking it dynamic, one graph for every length traces=2"]);
    // The first length keeps its own compilation; the others come from the dynamic trace.
    expect(forward.last!.dynamic).toBeUndefined();
  });

  it('compiles each length on its own with dynamic: false', async () => {
    const forward = compile(await fixtureModel({ flash: true }), { backend: 'cpu', dynamic: false });
    for (const t of [5, 7, 9]) await forward(tokens(t));
    expect(forward.stats).toEqual({ traces: 3, recompiles: 2, cacheHits: 0 });
  });

  it('makes no dim dynamic when two dims change at once', async () => {
    const forward = compile(fn((x: Tensor) => x.mul(2)), { backend: 'cpu' });
    await forward(tensor([1, 2, 3, 4], [2, 2]));
    await forward(tensor([1, 2, 3], [1, 3]));
    await forward(tensor([1, 2, 3, 4, 5, 6], [2, 3]));
    expect(forward.stats.traces).toBe(3);
    expect(forward.last!.dynamic).toBeUndefined();
  });
});

describe('a forward() that is not one graph for every length compiles each length on its own', () => {
  const cases: [string, (x: Tensor) => Tensor, RegExp][] = [
    ['a scalar that is not an integer of T (x * 1/T)', (x) => x.mul(1 / x.size(1)), /%1 = mul's operand 1 is 0\.2 at T=5 but 0\.333+ at T=3;/],
    ['an integer not affine in T (x * T^2)', (x) => x.mul(x.size(1) * x.size(1)), /%1 = mul's operand 1 is 25 at T=5, 9 at T=3, 4 at T=2, not a\*T \+ b;/],
    ['a graph whose node count follows T', (x) => Array.from({ length: x.size(1) }, () => 0).reduce((y: Tensor) => y.add(1), x), /it records 6 nodes at T=5 and 4 at T=3 \(node #4 is add at T=5, absent at T=3\);/],
  ];
  for (const [label, body, why] of cases) {
    it(`${label}: a coded log line naming the op's source line, then static compiles that are right`, async () => {
      setLogChannels('recompiles');
      const forward = compile(fn(body), { backend: 'cpu', dynamic: true });
      for (const t of [5, 2, 5]) {
        const x = tensor(Array.from({ length: t }, (_, i) => i), [1, t]);
        expect(Array.from(await forward(x).then((y) => y.data()))).toEqual(Array.from(await body(x).data()));
      }
      expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 1 });
      // The refusal, then the per-length recompile of T = 2 (T = 5 the second time is a hit).
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^\[kiln:recompiles\] not one graph for every length, compiling each length on its own: KILN_E011 test\/dynamic\.test\.ts:\d+:\d+: forward\(\) is not one graph for every length: /);
      expect(lines[0]).toMatch(why);
      expect(lines[1]).toBe('[kiln:recompiles] retracing forward(): x: f32[1,5] -> f32[1,2] traces=2');
    });
  }
});

describe('causalPrefix: the largest T whose leading square [:T, :T] of a mask is causal', () => {
  const tril = (n: number) => Float32Array.from({ length: n * n }, (_, k) => (k % n <= Math.floor(k / n) ? 1 : 0));
  const mask = (data: Float32Array, n: number) => ({ type: { dtype: 'f32' as const, shape: [1, 1, n, n] }, data });
  it('is the full size for a lower-triangular keep mask', () => {
    expect(causalPrefix(mask(tril(6), 6), 'keep', '%1').rows).toBe(6);
  });
  it('stops below the first element that breaks the rule, above or below the diagonal', () => {
    const above = tril(6);
    above[2 * 6 + 4] = 1; // query 2 sees key 4: squares up to 4 are causal
    expect(causalPrefix(mask(above, 6), 'keep', '%1')).toEqual({ rows: 4, reason: 'mask %1 is causal only for T <= 4: element [2, 4] is 1, so at T > 4 query 2 attends to key 4' });
    const below = tril(6);
    below[3 * 6 + 1] = 0; // query 3 does not see key 1
    expect(causalPrefix(mask(below, 6), 'keep', '%1').rows).toBe(3);
  });
  it('reads fill masks (true masks out) and additive masks (0 or -inf)', () => {
    const fill = tril(5).map((v) => 1 - v);
    expect(causalPrefix(mask(fill, 5), 'fill', '%1').rows).toBe(5);
    const additive = tril(5).map((v) => (v ? 0 : -Infinity));
    additive[4] = -1; // a finite score at [0, 4]
    expect(causalPrefix(mask(additive, 5), 'additive', '%1').rows).toBe(4);
  });
});

describe('dynamic compilation of a model with no length bound', () => {
  it('serves any length, and makes the batch dim dynamic when asked', async () => {
    const forward = compile(fn((x: Tensor) => F.softmax(x.mul(3), -1)), { backend: 'cpu', dynamic: { dim: 0 } });
    for (const b of [3, 1, 40]) {
      const x = tensor(Array.from({ length: b * 4 }, (_, i) => i / 7), [b, 4]);
      expect(Array.from(await (await forward(x)).data())).toEqual(Array.from(await F.softmax(x.mul(3), -1).data()));
    }
    expect(forward.stats.traces).toBe(1);
    expect(forward.last!.dynamic!.symbolic.range).toEqual({ min: 1, max: Infinity, why: 'nothing in the graph bounds T' });
  });

  it('compiles lengths 1 and 2 on their own until a longer one gives three lengths to trace', async () => {
    setLogChannels('recompiles');
    const forward = compile(fn((x: Tensor) => x.sum(1)), { backend: 'cpu', dynamic: true });
    for (const t of [1, 2, 5, 4]) expect(Array.from(await (await forward(tensor(Array.from({ length: t }, (_, i) => i), [1, t]))).data())).toEqual([(t * (t - 1)) / 2]);
    expect(forward.stats.traces).toBe(3);
    expect(forward.last!.dynamic!.symbolic.lengths).toEqual([5, 3, 2]);
    expect(lines[0]).toBe('[kiln:recompiles] compiling length 1 on its own: one graph for every length is traced at three lengths, and none above 2 is known yet (no config.block_size) traces=1');
  });
});
