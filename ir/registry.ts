// The op registry: one entry per op holds what it means: its type rule, CPU reference, gradient and
// FLOPs. How it becomes WGSL is codegen/wgsl/'s, keyed by the same name. Adding an op is adding one
// entry here (see ir/ops/) and one lowering there; nothing else in kiln switches on op names.

import type { GradRule } from './autograd.ts';
import type { IndexRange } from './bounds.ts';
import { KilnError, type SourceLoc } from './errors.ts';
import type { Attrs } from './graph.ts';
import type { HostData, HostTensor, Precision } from './host.ts';
import { type TensorType, numel } from './types.ts';

/** A node input as the type rule sees it: a tensor type, or a scalar literal's value. */
export type OperandType = TensorType | number;
/** A node input as the CPU reference sees it. */
export type CpuOperand = HostTensor | number;

/** How an elementwise op computes one element, for the CPU reference (its WGSL twin: codegen/wgsl/elementwise.ts). */
export interface ScalarFn {
  /** JS on numbers (bools as 0/1). */
  readonly js: (...args: number[]) => number;
}

export interface OpDef {
  readonly name: string;
  /** Leaf ops read the outside world (model inputs, parameters, buffers); the runtime feeds them. */
  readonly leaf?: boolean;
  /** The node's type is stored in attrs `dtype` and `shape` (leaves, constants); the printer shows it once. */
  readonly typeInAttrs?: boolean;
  /** The output is input 0's storage seen with another shape (reshape, identity dropout): no kernel. */
  readonly alias?: (attrs: Attrs) => boolean;
  /**
   * Draws random bits with these attrs (active dropout). A trace gives such a node the graph's `rng`
   * leaf as its last operand and a `seed` attr numbering the site, so a compiled graph draws fresh bits
   * on every call; eager calls keep a `seed` attr drawn per call and no `rng` operand.
   */
  readonly random?: (attrs: Attrs) => boolean;
  /**
   * The operands by name, in order, as MLIR's ODS declares them (`['q', 'k', 'v', 'mask?', 'rng?']`); a
   * trailing `?` marks an optional one. The verifier checks a node's operand count against it
   * (ir/operands.ts). Absent: the op's type rule alone says what it takes.
   */
  readonly operands?: readonly string[];
  /** Operands may be swapped (the pattern matcher tries both orders). */
  readonly commutative?: boolean;
  /** Elementwise ops give their scalar function; the generic machinery builds the CPU reference from it. */
  readonly scalar?: ScalarFn;
  /** Type rule; throws KilnError (E001/E002/E011) on bad inputs. */
  infer(inputs: readonly OperandType[], attrs: Attrs): TensorType;
  /** CPU reference in the requested precision. */
  cpu(inputs: readonly CpuOperand[], attrs: Attrs, out: TensorType, precision: Precision): HostData;
  /** Arithmetic operations one evaluation costs (`kiln kernels`); absent means one per output element. */
  readonly flops?: (inputs: readonly OperandType[], attrs: Attrs, out: TensorType) => number;
  /** Reverse-mode rule (ir/autograd.ts): each input's gradient from the output's, null where not differentiable. */
  readonly grad?: GradRule;
  /**
   * The operand whose values index something (embedding's token ids) and the range they must lie in.
   * Every backend checks it (ir/bounds.ts): the CPU reference throws, the kernel calls `report_bad_index`.
   */
  readonly indices?: (inputs: readonly OperandType[], attrs: Attrs) => IndexRange;
}

const registry = new Map<string, OpDef>();

export function registerOp(def: OpDef): OpDef {
  if (registry.has(def.name)) throw new Error(`op ${def.name} registered twice`);
  registry.set(def.name, def);
  return def;
}

export function getOp(name: string, loc?: SourceLoc): OpDef {
  const def = registry.get(name);
  if (!def) {
    const near = [...registry.keys()].filter((known) => editDistance(known, name) <= 2).sort();
    const hint = near.length ? ` (did you mean ${near.join(' or ')}?)` : '';
    throw new KilnError('KILN_E004', `unknown op "${name}"${hint}; known ops: ${[...registry.keys()].sort().join(', ')}`, loc);
  }
  return def;
}

/** Levenshtein distance, for "did you mean" hints. */
function editDistance(a: string, b: string): number {
  let row = [...Array(b.length + 1).keys()];
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length];
}

/** The FLOPs of one node of `op`, by its entry's `flops`, else one per output element. */
export function opFlops(op: string, inputs: readonly OperandType[], attrs: Attrs, out: TensorType): number {
  return getOp(op).flops?.(inputs, attrs, out) ?? numel(out.shape);
}

export function hasOp(name: string): boolean {
  return registry.has(name);
}

export function allOps(): OpDef[] {
  return [...registry.values()];
}
