// The WGSL backend's lowerings, keyed by op name: each family's file (./<family>.ts, beside the op's
// meaning in ir/ops/<family>.ts) gives the plans of its ops, and codegen/index.ts finds an op's here.
// A second target would sit beside this folder as codegen/<target>/ with its own table.

import { KilnError, type SourceLoc } from '../../ir/errors.ts';
import { attentionLowerings } from './attention.ts';
import { attentionBackwardLowerings } from './attention_backward.ts';
import { backwardLowerings } from './backward.ts';
import { decodeAttentionLowerings } from './decode_attention.ts';
import { elementwiseLowerings } from './elementwise.ts';
import { fusedAttentionLowerings } from './fused_attention.ts';
import { fusedLinearCeLowerings } from './fused_linear_ce.ts';
import { leafLowerings } from './leaf.ts';
import { linalgLowerings } from './linalg.ts';
import { optimLowerings } from './optim.ts';
import type { Lowering } from './plan.ts';
import { reduceLowerings } from './reduce.ts';
import { sampleLowerings } from './sample.ts';
import { shapeLowerings } from './shape.ts';

export type { KernelLimits, KernelPlan, KernelRequest, Lowering } from './plan.ts';
export { DEFAULT_KERNEL_LIMITS } from './plan.ts';

/** Op name -> its WGSL lowering. Leaves and aliases have none: they get no kernel. */
export const lowerings: Readonly<Record<string, Lowering>> = {
  ...leafLowerings,
  ...elementwiseLowerings,
  ...shapeLowerings,
  ...linalgLowerings,
  ...reduceLowerings,
  ...attentionLowerings,
  ...fusedAttentionLowerings,
  ...fusedLinearCeLowerings,
  ...decodeAttentionLowerings,
  ...attentionBackwardLowerings,
  ...backwardLowerings,
  ...optimLowerings,
  ...sampleLowerings,
};

/** The lowering of `op`; a KILN_E011 naming the op, and where lowerings live, when it has none. */
export function loweringOf(op: string, where: string, loc?: SourceLoc): Lowering {
  const lowering = Object.hasOwn(lowerings, op) ? lowerings[op] : undefined;
  if (!lowering) throw new KilnError('KILN_E011', `${op} has no WGSL lowering yet (${where}); lowerings live in codegen/wgsl/, keyed by op name`, loc);
  return lowering;
}
