// Where every front-end op goes: into the trace when tracing, else to the eager backend, op by op.
// Both check the op's type rule first, so a shape error names the user's line in either mode.

import { KilnError, type SourceLoc } from '../../ir/errors.ts';
import { type Attrs, Graph, type Node } from '../../ir/graph.ts';
import { getOp } from '../../ir/registry.ts';
import '../../ir/ops/index.ts';
import { autocastOperands } from './autocast.ts';
import { recordOp } from './grad-mode.ts';
import { callerLoc } from './loc.ts';
import type { Tensor } from './tensor.ts';

export type Arg = Tensor | number;

/** The tracer, while one runs: it turns calls into IR nodes. */
export interface TraceHook {
  record(op: string, inputs: readonly Arg[], attrs: Attrs, loc: SourceLoc | undefined): Tensor;
  /** A value read while tracing: kept so the trace fails with it even if forward() lost the throw (an async forward rejects instead). */
  refused(e: KilnError): void;
}

/** Runs one node eagerly and makes its result; its inputs are the given tensors, in order, fed as the node's `input` leaves. */
export interface EagerBackend {
  readonly name: string;
  run(node: Node, inputs: readonly Tensor[]): Tensor;
}

let activeTracer: TraceHook | null = null;
let eager: EagerBackend | null = null;

export function setTracer(t: TraceHook | null): TraceHook | null {
  const before = activeTracer;
  activeTracer = t;
  return before;
}

/** Tells the running trace, if any, of an E003 refusal before it is thrown. */
export function reportToTracer(e: KilnError): KilnError {
  activeTracer?.refused(e);
  return e;
}

export function isTracing(): boolean {
  return activeTracer !== null;
}

export function setEagerBackend(b: EagerBackend): void {
  eager = b;
}

export function eagerBackend(): EagerBackend {
  if (!eager) throw new KilnError('KILN_E011', 'no eager backend is set; import kiln from its index.ts');
  return eager;
}

/** Applies an op to tensors and scalars: the one door from the front end into the IR. */
export function apply(op: string, inputs: readonly Arg[], attrs: Attrs = {}): Tensor {
  const loc = callerLoc();
  if (activeTracer) return activeTracer.record(op, inputs, attrs, loc);
  for (const x of inputs) {
    if (typeof x !== 'number' && x.node) {
      throw new KilnError('KILN_E011', `a traced tensor (%${x.node.id}) escaped its trace; do not keep tensors from forward() between calls`, loc);
    }
  }
  // Inside autocast('f16', fn), operands are cast first, by the lists the compile-time pass uses.
  const operands = autocastOperands(op, inputs, attrs, loc, (x, dtype, at) => {
    const cast = runEager('cast', [x], { dtype }, at);
    recordOp('cast', [x], { dtype }, at, cast);
    return cast;
  });
  const out = runEager(op, operands, attrs, loc);
  recordOp(op, operands, attrs, loc, out);
  return out;
}

/** Runs one op now on the eager backend, recording nothing (apply records; backward() runs its nodes here). */
export function runEager(op: string, inputs: readonly Arg[], attrs: Attrs, loc: SourceLoc | undefined): Tensor {
  // One-node graph: tensor inputs become `input` leaves, scalars stay literals.
  const g = new Graph();
  // Leaf `x<i>` is the i-th tensor operand: backends find their inputs by that name.
  let tensorIndex = 0;
  const operands = inputs.map((x) =>
    typeof x === 'number' ? x : g.add('input', [], { name: `x${tensorIndex++}`, dtype: x.dtype, shape: [...x.shape] }),
  );
  const node = g.add(op, operands, attrs, loc);
  const tensors = inputs.filter((x): x is Tensor => typeof x !== 'number');
  const def = getOp(op);
  if (def.alias?.(node.attrs)) return tensors[0].viewAs(node.type);
  return eagerBackend().run(node, tensors);
}
