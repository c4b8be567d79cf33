// Every spelling of attention that kiln fuses, written once as the model code it matches (Inductor's
// fuse_attention.py writes `_sfdp_pattern_N(query, key, value, inv_scale)` the same way). Each is
// traced over symbolic inputs, canonicalized as a model's graph is, and printed into
// passes/attention-patterns.generated.ts, where fuse_attention makes one rule of each.
//
// Adding a spelling is adding one function below, then `npm run gen:attention-patterns`
// (test/attention-spellings.test.ts fails until the generated file matches).
// A `where(keep, scores, -inf)` needs no spelling: canonicalization turns it into masked_fill.

import { CANONICAL_RULES } from '../passes/canonicalize.ts';
import { eliminateDeadCode } from '../passes/dce.ts';
import { rewriteGraph } from '../passes/pattern.ts';
import { type Graph, isNode, rebuildGraph } from '../ir/graph.ts';
import { printGraph } from '../ir/text.ts';
import type { DType } from '../ir/types.ts';
import { tensor } from './frontend/create.ts';
import * as F from './frontend/functional.ts';
import { Module } from './frontend/module.ts';
import type { Tensor } from './frontend/tensor.ts';
import { traceModule } from './tracer.ts';

/** The scalars a spelling may take, each traced as a distinct number the pattern reads back as a wildcard. */
export interface SpellingScalars {
  scale: number;
  qScale: number;
  kScale: number;
  fill: number;
}
const SCALARS: SpellingScalars = { scale: 1001, qScale: 1002, kScale: 1003, fill: 1004 };

export interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  mask: Tensor;
}

// ---- the chain: dropout?(softmax(mask(scores))) @ v, one rule per combination of the parts ----

/** How models scale q @ k^T. Most specific first. */
const SCORES: Record<string, (i: Inputs, s: SpellingScalars) => Tensor> = {
  scaled: ({ q, k }, s) => q.matmul(k.transpose(-2, -1)).mul(s.scale), // nanoGPT: (q @ k^T) * (1/sqrt(d))
  q_and_k_scaled: ({ q, k }, s) => q.mul(s.qScale).matmul(k.transpose(-2, -1).mul(s.kScale)), // each by d^-1/4
  q_scaled: ({ q, k }, s) => q.mul(s.qScale).matmul(k.transpose(-2, -1)),
  unscaled: ({ q, k }) => q.matmul(k.transpose(-2, -1)),
};

/** How models mask the scores. `additive` reads an f32 mask; the others a bool one. */
const MASKS: Record<string, (att: Tensor, i: Inputs, s: SpellingScalars) => Tensor> = {
  masked_fill: (att, { mask }, s) => att.maskedFill(mask, s.fill),
  additive: (att, { mask }) => att.add(mask),
  unmasked: (att) => att,
};

/** The weights: the softmax over the keys, with dropout or without. */
const WEIGHTS: Record<string, (att: Tensor) => Tensor> = {
  dropout: (att) => F.dropout(F.softmax(att, -1), 0.1),
  softmax: (att) => F.softmax(att, -1),
};

// ---- sdpa: the op itself; isCausal and scale are its attrs, so one spelling each covers them ----

const SDPA: Record<string, (i: Inputs) => Tensor> = {
  // First: a lone fourth operand is taken as the rng only if it is one (else it is the mask, below).
  dropout: ({ q, k, v }) => F.scaledDotProductAttention(q, k, v, { dropoutP: 0.1 }), // also without dropout
  mask_dropout: ({ q, k, v, mask }) => F.scaledDotProductAttention(q, k, v, { attnMask: mask, dropoutP: 0.1 }), // also without
};

export interface Spelling {
  readonly family: 'attention_chain' | 'sdpa';
  readonly name: string;
  readonly maskDtype: DType;
  readonly fn: (i: Inputs, s: SpellingScalars) => Tensor;
}

/** Every spelling, in the order the rules try them. */
export function attentionSpellings(): Spelling[] {
  const chain: Spelling[] = [];
  for (const [w, weights] of Object.entries(WEIGHTS)) {
    for (const [m, mask] of Object.entries(MASKS)) {
      for (const [sc, scores] of Object.entries(SCORES)) {
        const fn = (i: Inputs, s: SpellingScalars) => weights(mask(scores(i, s), i, s)).matmul(i.v);
        chain.push({ family: 'attention_chain', name: `${w}/${m}/${sc}`, maskDtype: m === 'additive' ? 'f32' : 'bool', fn });
      }
    }
  }
  const sdpa = Object.entries(SDPA).map(([name, fn]): Spelling => ({ family: 'sdpa', name: `sdpa/${name}`, maskDtype: 'bool', fn }));
  return [...chain, ...sdpa];
}

/** A spelling traced over symbolic q, k, v [1, 2, 4, 8] and mask [4, 4], canonicalized: its IR text and the scalars it reads. */
export function traceSpelling(spelling: Spelling): { text: string; scalars: Partial<SpellingScalars> } {
  const zeros = (shape: number[], dtype: DType) => tensor(new Array(shape.reduce((a, b) => a * b, 1)).fill(0), shape, dtype);
  class Spelled extends Module {
    forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor): Tensor {
      return spelling.fn({ q, k, v, mask }, SCALARS);
    }
  }
  const args = [zeros([1, 2, 4, 8], 'f32'), zeros([1, 2, 4, 8], 'f32'), zeros([1, 2, 4, 8], 'f32'), zeros([4, 4], spelling.maskDtype)];
  const traced = traceModule(new Spelled(), args).graph;
  const graph = withoutLocations(eliminateDeadCode(rewriteGraph(traced, CANONICAL_RULES).graph));
  const literals = new Set(graph.nodes.flatMap((n) => n.inputs.filter((x) => !isNode(x))));
  const scalars = Object.fromEntries(Object.entries(SCALARS).filter(([, value]) => literals.has(value)));
  return { text: printGraph(graph), scalars };
}

function withoutLocations(graph: Graph): Graph {
  return rebuildGraph(graph, (node, { out, mapped }) => out.addRaw({ ...node, inputs: node.inputs.map(mapped), loc: undefined, scope: undefined }));
}

/** The text of passes/attention-patterns.generated.ts. */
export function attentionPatternsFile(): string {
  const entries = attentionSpellings().map((s) => {
    const { text, scalars } = traceSpelling(s);
    return `  {\n    family: '${s.family}',\n    name: '${s.name}',\n    scalars: ${JSON.stringify(scalars)},\n    text: \`\n${text}\`,\n  },\n`;
  });
  return [
    '// Generated by `npm run gen:attention-patterns` from compiler/attention-spellings.ts: do not edit.',
    '// Each attention spelling, traced over symbolic inputs and canonicalized, as IR text.',
    '',
    "import type { TracedPattern } from './traced-pattern.ts';",
    '',
    "export const ATTENTION_PATTERNS: readonly (TracedPattern & { readonly family: 'attention_chain' | 'sdpa' })[] = [",
    ...entries.map((e) => e.trimEnd()),
    '];',
    '',
  ].join('\n');
}
