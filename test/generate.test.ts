// compileGenerator on the cpu backend: the KV-cached decode derived from nanoGPT's forward() against
// recomputing the window (tokens exactly, logits within 1e-5), and its refusals.

import { describe, expect, it } from 'vitest';
import { compileGenerator } from '../compiler/generate.ts';
import { stateTensors } from '../compiler/leaves.ts';
import type { Graph, Node } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import { numel, sameShape } from '../ir/types.ts';
import { cacheRowsOf, decodeGraph } from '../passes/kv-cache.ts';
import { interpret } from '../runtime/interpreter.ts';
import { rng } from './helpers.ts';
import { expectCacheMatchesRecompute, run, tinyModel } from './generate-cases.ts';

// f32 throughout: the cached step sums the same products as the full forward, in another order (1e-6 at most seen; 1e-5 the bound).
const TOL = 1e-5;

describe('compileGenerator on the cpu', () => {
  it('greedy tokens with the cache equal recomputing, logits within 1e-5, for a prompt shorter than block_size', async () => {
    const steps = await expectCacheMatchesRecompute('cpu', tinyModel(), [1, 2, 3], 5, TOL);
    expect(steps.map((s) => s.kind)).toEqual(['prefill', 'decode', 'decode', 'decode', 'decode']);
  });

  it('a prompt as long as block_size, and one longer (cropped to its last block_size tokens), run fresh prefills of the window', async () => {
    const equal = await expectCacheMatchesRecompute('cpu', tinyModel(2), [1, 2, 3, 4, 5, 6, 7, 8], 3, TOL);
    expect(equal.map((s) => s.kind)).toEqual(['prefill', 'window', 'window']);
    const longer = await expectCacheMatchesRecompute('cpu', tinyModel(3), [9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 0], 3, TOL);
    expect(longer.map((s) => s.kind)).toEqual(['prefill', 'window', 'window']);
  });

  it('the window grows through the decode steps and past block_size, 2 rows at once', async () => {
    const steps = await expectCacheMatchesRecompute('cpu', tinyModel(4), [[1, 2], [3, 4]], 9, TOL);
    expect(steps.map((s) => s.kind).join(' ')).toBe('prefill decode decode decode decode decode decode window window');
  });

  it('one symbolic trace for every prompt length (dynamic, the default) gives the graphs, so the logits, of a trace per length, bit for bit', async () => {
    const model = tinyModel(5);
    const dynamic = await run(await compileGenerator(model, { backend: 'cpu' }), [3, 1, 4, 1, 5], { maxNewTokens: 6, greedy: true });
    const fixed = await run(await compileGenerator(model, { backend: 'cpu', dynamic: false }), [3, 1, 4, 1, 5], { maxNewTokens: 6, greedy: true });
    expect(dynamic.tokens).toEqual(fixed.tokens);
    for (const [i, s] of dynamic.steps.entries()) expect([...s.logits!], `step ${i}`).toEqual([...fixed.steps[i].logits!]);
  });

  it('a seed repeats its draws, another seed draws others (top_k 5, temperature 1.5), with and without the cache', async () => {
    const gen = await compileGenerator(tinyModel(6), { backend: 'cpu' });
    const draw = async (seed: number, cache = true) => (await gen.generate([1, 2, 3], { maxNewTokens: 12, topK: 5, temperature: 1.5, seed, cache })).tokens;
    const first = await draw(1);
    expect(await draw(1)).toEqual(first);
    expect(await draw(1, false)).toEqual(first);
    expect(await draw(2)).not.toEqual(first);
  });
});

describe('the decode step reads q, k, v in place (passes/kv-cache.ts readPackedQkv)', () => {
  it('no slice runs; logits, tokens and the new cache rows are those of copying q, k, v out, bit for bit (2 rows, pos 5)', async () => {
    const model = tinyModel(7);
    const gen = await compileGenerator(model, { backend: 'cpu' });
    const { plan, fused } = await gen.plan(2);
    const sampling = { greedy: true, temperature: 1, topK: 0, seed: 0 };
    const inPlace = decodeGraph(fused, plan, 8, { sampling, keepLogits: true });
    const copied = decodeGraph(fused, plan, 8, { sampling, keepLogits: true, inPlaceQkv: false });
    expect(inPlace.nodesOf('slice')).toEqual([]);
    expect(copied.nodesOf('slice')).toHaveLength(3 * 2); // q, k, v of each of the 2 layers
    expect(inPlace.nodesOf('decode_attention').map((n) => n.attrs.columns)).toEqual([[0, 16, 32], [0, 16, 32]]);
    expect(inPlace.outputs.map((o) => o.name)).toEqual(['tokens', 'logits', 'k.0@16', 'v.0@32', 'k.1@16', 'v.1@32']);
    // Random caches and a token per row at position 5: the same leaves fed to both graphs.
    const next = rng(3);
    const leaves = new Map<string, HostTensor>([['idx', hostTensor('i32', [2, 1], Int32Array.of(4, 9))], ['pos', hostTensor('i32', [], Int32Array.of(5))]]);
    const state = stateTensors(model);
    const feed = (g: Graph) => (n: Node): HostTensor => {
      const name = String(n.attrs.name);
      if (n.op === 'param' || n.op === 'buffer') return state.get(name)!.readHost()!;
      if (!leaves.has(name)) leaves.set(name, hostTensor('f32', [...n.type.shape], Float32Array.from({ length: numel(n.type.shape) }, () => next() * 2 - 1)));
      expect(sameShape(leaves.get(name)!.type.shape, n.type.shape), `${name} in ${g.outputs.length} outputs`).toBe(true);
      return leaves.get(name)!;
    };
    const a = interpret(inPlace, feed(inPlace), 'f32');
    const b = interpret(copied, feed(copied), 'f32');
    expect(Array.from(a.get('logits')!.data)).toEqual(Array.from(b.get('logits')!.data));
    expect(Array.from(a.get('tokens')!.data)).toEqual(Array.from(b.get('tokens')!.data));
    for (const layer of [0, 1]) {
      for (const [name, column] of [['k', 16], ['v', 32]] as const) {
        const cache = `${name}_cache.${layer}`;
        expect(cacheRowsOf(inPlace, cache)).toEqual({ output: `${name}.${layer}@${column}`, column, count: 16 });
        expect(cacheRowsOf(copied, cache)).toEqual({ output: `${name}.${layer}`, column: 0, count: 8 }); // [B, H, D]: rows of one head, whole
        const rows = a.get(`${name}.${layer}@${column}`)!; // [2, 48]: each row's [column, column + 16) is the cache row
        const picked = [0, 1].flatMap((r) => Array.from(rows.data.subarray(r * 48 + column, r * 48 + column + 16)));
        expect(picked).toEqual(Array.from(b.get(`${name}.${layer}`)!.data));
      }
    }
  });
});
