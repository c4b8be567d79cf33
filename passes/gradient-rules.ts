// Two rewrites for the graphs autograd builds, run by the rewrite engine like any other rule:
//   concat_slice_gradients  the gradients of slices that tile their input (q, k, v split from one
//                           projection) meet as one concat, not a sum of zero-padded tensors
//   two_step_row_sum        a sum over the leading dims of a big tensor (a bias's gradient,
//                           [B, T, C] -> [C]) in two steps, so the GPU has rows / ROW_BLOCK x C
//                           outputs to spread the first step over instead of C

import type { Node } from '../ir/graph.ts';
import { MAX_CONCAT_INPUTS } from '../ir/ops/backward.ts';
import { sliceBounds } from '../ir/ops/shape.ts';
import type { Pass } from './manager.ts';
import { type RewriteContext, type Rule, capture, op, rewriteGraph } from './pattern.ts';

/** The slice_backward leaves of an add tree whose inner adds feed only the tree (autograd's sum of a node's gradients). */
function addedTerms(root: Node, ctx: RewriteContext): Node[] {
  const terms: Node[] = [];
  const walk = (n: Node, inner: boolean) => {
    if (n.op === 'add' && (!inner || (ctx.users.get(n)?.length ?? 0) === 1) && n.inputs.every((x) => typeof x !== 'number')) {
      for (const x of n.inputs) walk(x as Node, true);
    } else terms.push(n);
  };
  walk(root, false);
  return terms;
}

/** Each term's gradient and where it lies in the input, sorted; null unless the terms tile one dim exactly with step 1. */
function tiling(terms: readonly Node[]): { dim: number; grads: Node[] } | null {
  if (terms.length < 2 || terms.length > MAX_CONCAT_INPUTS || !terms.every((t) => t.op === 'slice_backward')) return null;
  const shape = terms[0].type.shape;
  const dimOf = (t: Node) => ((t.attrs.dim as number) + shape.length) % shape.length;
  const dim = dimOf(terms[0]);
  if (!terms.every((t) => dimOf(t) === dim)) return null;
  const ranges = terms.map((t) => ({ grad: t.inputs[0] as Node, ...sliceBounds(t.attrs, shape[dim]) }));
  if (!ranges.every((r) => r.step === 1)) return null;
  ranges.sort((a, b) => a.start - b.start);
  let at = 0;
  for (const r of ranges) {
    if (r.start !== at) return null;
    at += r.grad.type.shape[dim];
  }
  return at === shape[dim] ? { dim, grads: ranges.map((r) => r.grad) } : null;
}

export const CONCAT_SLICE_GRADIENTS: Rule = {
  name: 'concat_slice_gradients',
  description: 'a sum of slice_backward terms that tile their input exactly becomes one concat of the slices gradients',
  pattern: op('add', [capture('a'), capture('b')], { name: 'sum' }),
  where: (m, ctx) => (tiling(addedTerms(m.root, ctx)) ? true : 'the added terms are not slice gradients tiling one dim'),
  build: (m, b, ctx) => {
    const { dim, grads } = tiling(addedTerms(m.root, ctx))!;
    return b.add('concat', grads, { dim });
  },
};

/** Rows per block when a long sum over leading dims is done in two steps. */
export const ROW_BLOCK = 256;

export const TWO_STEP_ROW_SUM: Rule = {
  name: 'two_step_row_sum',
  description: 'a sum over the leading dims of at least 4 x ROW_BLOCK rows: blocks of ROW_BLOCK rows first, then the blocks',
  pattern: op('sum', [capture('x')], { name: 'sum', attrs: { keepdim: (v) => v !== true } }),
  where: (m) => {
    const dims = m.node('sum').attrs.dims as number[];
    const shape = m.node('x').type.shape;
    if (!dims.every((d, i) => d === i) || dims.length === shape.length) return 'the summed dims are not the leading ones (with some left)';
    const rows = shape.slice(0, dims.length).reduce((a, b) => a * b, 1);
    return rows >= 4 * ROW_BLOCK && rows % ROW_BLOCK === 0 ? true : `${rows} rows: fewer than ${4 * ROW_BLOCK} or not a multiple of ${ROW_BLOCK}`;
  },
  build: (m, b) => {
    const x = m.node('x');
    const lead = (m.node('sum').attrs.dims as number[]).length;
    const rows = x.type.shape.slice(0, lead).reduce((a, c) => a * c, 1);
    const blocks = b.add('reshape', [x], { shape: [rows / ROW_BLOCK, ROW_BLOCK, ...x.type.shape.slice(lead)] });
    return b.add('sum', [b.add('sum', [blocks], { dims: [1], keepdim: false })], { dims: [0], keepdim: false });
  },
};

export const concatSliceGradients: Pass = {
  name: 'concat_slice_gradients',
  stage: 'canonical',
  description: 'gradients of slices that tile their input meet as one concat (the q/k/v split), not a sum of padded tensors',
  run: (graph) => rewriteGraph(graph, [CONCAT_SLICE_GRADIENTS]).graph,
};

export const twoStepRowSums: Pass = {
  name: 'two_step_row_sums',
  stage: 'lowered',
  description: 'long sums over leading dims (bias gradients) in two steps, so the GPU spreads them over more workgroups',
  run: (graph) => rewriteGraph(graph, [TWO_STEP_ROW_SUM]).graph,
};
