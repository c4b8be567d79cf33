// Grad mode, as torch's: while it is on, each eager op that reads a tensor requiring grad hangs a
// record (op, attrs, input tensors) on its result, `grad_fn` style; tape.ts's backward() reads them.
// noGrad() turns it off. The records belong to the tensors, so a graph nobody can reach is garbage.

import { dtypeInfo } from '../../ir/dtypes.ts';
import type { SourceLoc } from '../../ir/errors.ts';
import type { Attrs } from '../../ir/graph.ts';
import type { Tensor } from './tensor.ts';

/** How an eager tensor was made from tensors that require grad (torch's grad_fn). */
export interface TapeRecord {
  readonly op: string;
  readonly attrs: Attrs;
  readonly loc?: SourceLoc;
  /** The op's operands; null once a backward() freed this graph. */
  inputs: readonly (Tensor | number)[] | null;
}

/** Open noGrad() calls; ops record only while there are none. */
let noGradDepth = 0;

/** Whether eager ops record for backward() now (torch.is_grad_enabled). */
export function isGradEnabled(): boolean {
  return noGradDepth === 0;
}

/**
 * Runs `fn` with recording off (torch.no_grad): its results have no tape and never require grad.
 * For an async `fn`, recording stays off until its promise settles.
 */
export function noGrad<T>(fn: () => T): T {
  noGradDepth++;
  let result: T;
  try {
    result = fn();
  } catch (e) {
    noGradDepth--;
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => noGradDepth--) as T;
  noGradDepth--;
  return result;
}

/** Hangs `out`'s record on it when grad mode is on and an input requires grad; else does nothing. */
export function recordOp(op: string, inputs: readonly (Tensor | number)[], attrs: Attrs, loc: SourceLoc | undefined, out: Tensor): void {
  if (noGradDepth > 0 || !dtypeInfo(out.dtype).isFloat) return;
  if (!inputs.some((x) => typeof x !== 'number' && x.requiresGrad)) return;
  out.gradFn = { op, attrs, loc, inputs };
}
