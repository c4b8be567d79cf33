// Fused linear + cross-entropy under autocast f16 on the cpu (passes/linear-ce.ts): the chunks compute
// what the unfused autocast graph computes (passes/autocast.ts), lm_head's three products in f16: each
// chunk's logits an f16 matmul cast up to f32 (lse and loss in f32), d cast to f16, dx and dw's parts
// f16 matmuls. Both graphs are interpreted at f32, which rounds every f16 value as the device stores it.

import { describe, expect, it } from 'vitest';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { chunkRows } from '../passes/linear-ce.ts';
import { interpret } from '../runtime/interpreter.ts';
import { type LmHeadCase, feedOf, lmHeadFeeds, lmHeadGraph, trainingPipeline } from './fused-linear-ce-cases.ts';
import { asNumbers, relError } from './helpers.ts';

const U16 = 2 ** -11; // f16's unit roundoff
const U32 = 2 ** -24; // f32's

const CASES: Record<string, LmHeadCase> = {
  '20 rows in chunks of 8, 8 and 4, every fifth target ignored': { B: 2, T: 10, C: 16, V: 50, ignoreEvery: 5 },
  'w tied to an embedding the hidden state reads (wte)': { B: 2, T: 10, C: 16, V: 50, tied: true, ignoreEvery: 4 },
  '128 rows x 300 classes in 8 chunks of 16': { B: 4, T: 32, C: 32, V: 300, ignoreEvery: 5 },
};

/**
 * The lowered training step of the case under autocast f16, fused and chunked or not. Matmul epilogues
 * off: the tests read lm_head's products themselves, which an epilogue keeps in registers.
 */
const step = (c: LmHeadCase, fused: boolean) => trainingPipeline(lmHeadGraph(c), 'f16', { fuse_linear_cross_entropy: fused, fuse_matmul_epilogue: false }).lowered;

/** lm_head's f16 products x @ w^T of [rows, V] logits: the unfused graph's one, or each chunk's (forward, then backward). */
const logitProducts = (graph: Graph, v: number): Node[] => graph.nodesOf('matmul').filter((m) => m.attrs.transposeB === true && m.type.shape.at(-1) === v);

/** Interprets the graph at f32 with these nodes as extra outputs, named by their index. */
function run(graph: Graph, feeds: Map<string, HostTensor>, extra: Node[] = []): Map<string, HostTensor> {
  graph.setOutputs([...graph.outputs, ...extra.map((node, i) => ({ name: `extra${i}`, node }))]);
  return interpret(graph, feedOf(feeds), 'f32');
}

const values = (out: Map<string, HostTensor>, name: string) => Array.from(asNumbers(out.get(name)!.data));
const bitEqualShare = (a: number[], b: number[]) => a.filter((x, i) => Object.is(x, b[i])).length / a.length;

describe('chunk_linear_cross_entropy under autocast f16', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: lm_head's products are f16 as unfused; logits bit for bit, loss and dx to f32 sum order and d's f16 rounding, dw to its chunks' f16 roundings`, () => {
      const feeds = lmHeadFeeds(c);
      const [fused, unfused] = [step(c, true), step(c, false)];
      const n = c.B * c.T;
      const chunks = Math.ceil(n / chunkRows(n, c.V, c.C));
      // Every matmul is f16 (the logits in the forward, then per chunk the logits again, dx and dw); none f32.
      const matmuls = (g: Graph) => g.nodesOf('matmul').map((m) => m.type.dtype);
      expect(matmuls(unfused)).toEqual(['f16', 'f16', 'f16']);
      expect(matmuls(fused)).toEqual(Array(4 * chunks).fill('f16'));
      expect(fused.nodesOf('fused_linear_cross_entropy')).toEqual([]);

      const chunkLogits = logitProducts(fused, c.V);
      const [wholeLogits] = logitProducts(unfused, c.V);
      expect(chunkLogits).toHaveLength(2 * chunks);
      const dwParts = fused.nodesOf('matmul').filter((m) => m.type.shape[0] === c.V);
      expect(dwParts).toHaveLength(chunks);
      const got = run(fused, feeds, [...chunkLogits, ...dwParts]);
      const want = run(unfused, feeds, [wholeLogits]);

      // The same f16 products of the same rows (f32 sums, one rounding to f16), in the forward and again in
      // the backward: bit for bit. Their cast up to f32 is exact.
      const logits = values(want, 'extra0');
      expect(chunkLogits.slice(0, chunks).flatMap((_, i) => values(got, `extra${i}`))).toEqual(logits);
      expect(chunkLogits.slice(chunks).flatMap((_, i) => values(got, `extra${chunks + i}`))).toEqual(logits);

      // Each row's loss is the same f64 function of those logits. The unfused mean rounds the row losses'
      // sum once; the chunks round each row (cross_entropy_rows), each chunk's sum and the running sum to
      // f32. Row losses are positive, so that is at most (N + 2 chunks + 1) roundings of u32 of the total.
      const lossError = relError(values(got, 'loss'), values(want, 'loss'));
      expect(lossError).toBeLessThanOrEqual((n + 2 * chunks + 1) * U32); // measured 0 in all three

      // dx = d16 @ w16, row by row the same product. d is the same (softmax - onehot) * g / kept in f32,
      // but the chunks form softmax as exp(logits - lse) with the forward's lse, the unfused graph with its
      // softmax: they differ in f32's last bits, which flips d's rounding to f16 where it sits at a tie's
      // edge (about 2^-13 of the values). A flipped d moves dx's f32 sum by |w| <= 0.5 times one f16 ulp
      // of d, under one f16 ulp (2^-10 relative) of the largest dx; dx's rounding to f16 adds at most one.
      const [dx, dxWant] = [values(got, 'grad.h'), values(want, 'grad.h')];
      const dxError = relError(dx, dxWant);
      console.log(`${name}: loss ${lossError.toExponential(2)}, dx ${dxError.toExponential(2)} (${(100 * bitEqualShare(dx, dxWant)).toFixed(2)}% bit-equal)`);
      expect(bitEqualShare(dx, dxWant)).toBeGreaterThan(0.99); // measured 100% in all three (99.9% of 128 x 32 with f16-exact h)
      expect(dxError).toBeLessThanOrEqual(2 * 2 ** -10); // two f16 ulps of the largest dx

      // dw: the unfused graph's one f16 matmul over all rows sums in f32 (f64 on the cpu) and rounds once;
      // the chunks round each chunk's part to f16, sum the parts in f32 and round the sum to f16 once. An
      // f16 rounding of v errs by at most max(u16 |v|, 2^-25) (2^-25: half the spacing of f16's subnormals),
      // so elementwise |dw - dw_unfused| <= u16 (sum of |part| + 2 |sum of parts|) + (chunks + 2) 2^-25, the
      // f32 sums' errors (u32: the parts', and the tied case's add of the embedding's gradient) beside it.
      const [dw, dwWant] = [values(got, 'grad.w'), values(want, 'grad.w')];
      const parts = dwParts.map((_, i) => values(got, `extra${2 * chunks + i}`));
      const bound = (i: number) => {
        const [abs, sum] = parts.reduce(([a, s], p) => [a + Math.abs(p[i]), s + p[i]], [0, 0]);
        return U16 * (abs + 2 * Math.abs(sum)) + (chunks + 2) * 2 ** -25 + 4 * U32 * (abs + Math.abs(dwWant[i]));
      };
      const over = dw.filter((x, i) => Math.abs(x - dwWant[i]) > bound(i));
      console.log(`${name}: dw ${relError(dw, dwWant).toExponential(2)} (${(100 * bitEqualShare(dw, dwWant)).toFixed(2)}% bit-equal)`);
      expect(over).toEqual([]);
    });
  }
});
