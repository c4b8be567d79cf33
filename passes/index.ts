// The default pipeline, in stage order. A pass is added here once, by name.
import { fuseAttention } from './attention.ts';
import { autocast } from './autocast.ts';
import { castHoisting } from './cast-hoist.ts';
import { canonicalize } from './canonicalize.ts';
import { crossEntropyRows } from './cross-entropy.ts';
import { chunkLinearCrossEntropy, fuseLinearCrossEntropy } from './linear-ce.ts';
import { deadCodeElimination } from './dce.ts';
import { decodeSplit } from './decode-split.ts';
import { elementwiseFusion } from './elementwise.ts';
import { concatSliceGradients, twoStepRowSums } from './gradient-rules.ts';
import { commonSubexpressions, constantFolding } from './fold.ts';
import type { Pass } from './manager.ts';
import { matmulEpilogue } from './matmul-epilogue.ts';

export const DEFAULT_PIPELINE: readonly Pass[] = [
  canonicalize, // canonical: one spelling per computation
  constantFolding,
  commonSubexpressions,
  concatSliceGradients, // canonical: slice gradients tiling their input as one concat
  deadCodeElimination('canonical'),
  fuseAttention, // fused: attention chains -> fused_attention
  deadCodeElimination('fused'), // the chains fusion replaced are dead now
  autocast, // fused: with { autocast: 'f16' }, casts so matmul and attention run in f16, norms and losses in f32
  castHoisting, // fused: casts down to f16 above slices, reshapes and transposes, to fold into their producer's kernel
  fuseLinearCrossEntropy, // fused: lm_head matmul + cross_entropy -> fused_linear_cross_entropy (after autocast: it sees its casts)
  chunkLinearCrossEntropy, // lowered: that loss and its gradients in chunks of rows, never the [N, V] logits
  crossEntropyRows, // lowered: big losses row-parallel
  decodeSplit, // lowered: decode attention over a long KV cache split across workgroups (flash-decoding)
  twoStepRowSums, // lowered: long sums over leading dims in two steps
  elementwiseFusion, // lowered: elementwise chains as one kernel each
  matmulEpilogue, // lowered: the chain a matmul feeds, in the matmul's kernel
];

export { AUTOCAST_F16_OPS, AUTOCAST_F32_OPS, autocastGraph, autocastPlan, type AutocastDType, type AutocastRule } from './autocast.ts';
export { checkPassOptions, runPasses, STAGES, type Decision, type Pass, type PassContext, type PassOptions, type PassResult, type Stage } from './manager.ts';
