// Patterns traced from model code, as Inductor's fuse_attention.py makes them: a spelling is a small
// function in kiln's front-end API (compiler/attention-spellings.ts), traced over symbolic inputs and
// canonicalized; its IR text is stored in a generated file (passes/ may not import the front end) and
// becomes a Pattern here. Inputs become captures by name, the scalars the function took as parameters
// become scalar wildcards, and the graph's rng leaf an optional last operand (eager graphs have none).

import { type Node, type Operand, isNode } from '../ir/graph.ts';
import { RNG_TYPE } from '../ir/ops/leaf.ts';
import { parseGraph } from '../ir/text.ts';
import { sameType } from '../ir/types.ts';
import { type AttrTest, type Pattern, capture, oneOf, op, scalar } from './pattern.ts';

/** One traced spelling, as the generated file stores it. */
export interface TracedPattern {
  /** The spelling's name, e.g. `dropout(softmax(masked_fill(scaled)))`. */
  readonly name: string;
  /** Its scalar parameters, each with the distinct number it was traced with. */
  readonly scalars: Readonly<Record<string, number>>;
  /** The traced, canonicalized graph as IR text; its one output is the pattern's root. */
  readonly text: string;
}

/** How a family of patterns reads: names for refusals, and attr tests in place of exact equality. */
export interface PatternVocabulary {
  /**
   * How a refusal names a node or a scalar: by scalar parameter (`scale`), by op and one of its attrs
   * (`matmul{transposeB=true}`), or by op.
   */
  readonly what?: Readonly<Record<string, string>>;
  /** Per op, attr tests that replace exact equality with the traced value (ANY accepts every value). */
  readonly attrs?: Readonly<Record<string, Readonly<Record<string, AttrTest>>>>;
}

/** An attr test that accepts every value: the attr does not change what the pattern means. */
export const ANY: AttrTest = () => true;

const isRng = (x: Operand) => isNode(x) && sameType(x.type, RNG_TYPE);

export function tracedPattern(traced: TracedPattern, vocab: PatternVocabulary = {}): Pattern {
  const graph = parseGraph(traced.text);
  const root = graph.outputs[0].node;
  const scalarNames = new Map(Object.entries(traced.scalars).map(([name, value]) => [value, name]));
  const reached = reachable(root);
  const opCount = new Map<string, number>();
  for (const n of reached) opCount.set(n.op, (opCount.get(n.op) ?? 0) + 1);
  const what = (n: Node) => Object.entries(n.attrs).map(([k, v]) => vocab.what?.[`${n.op}{${k}=${JSON.stringify(v)}}`]).find((w) => w) ?? vocab.what?.[n.op] ?? n.op;

  const convert = (x: Operand): Pattern => {
    if (!isNode(x)) {
      const name = scalarNames.get(x);
      if (name === undefined) throw new Error(`pattern ${traced.name}: the number ${x} is none of its scalar parameters (${[...scalarNames.values()].join(', ')}); take it as one`);
      return scalar(name, vocab.what?.[name] ?? name);
    }
    if (x.op === 'input') return capture(String(x.attrs.name));
    if (x.op === 'rng') return capture('rng', { test: isRng, what: 'the rng' });
    const attrs: Record<string, AttrTest> = { ...x.attrs, ...vocab.attrs?.[x.op] };
    const opts = { attrs, what: what(x), name: opCount.get(x.op) === 1 ? x.op : undefined };
    const withInputs = (inputs: readonly Operand[]) => op(x.op, inputs.map(convert), opts);
    // The rng operand comes with traced dropout only: match the op with it, then without.
    const last = x.inputs.at(-1);
    return last !== undefined && isNode(last) && last.op === 'rng' ? oneOf(withInputs(x.inputs), withInputs(x.inputs.slice(0, -1))) : withInputs(x.inputs);
  };
  return convert(root);
}

function reachable(root: Node): Set<Node> {
  const seen = new Set<Node>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || n.op === 'input' || n.op === 'rng') continue;
    seen.add(n);
    for (const x of n.inputs) if (isNode(x)) stack.push(x);
  }
  return seen;
}
