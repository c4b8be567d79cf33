// Autocast, as torch.autocast does it on CUDA: ops on its f16 list (matmul, so nn.Linear; attention)
// run in f16, ops on its f32 list (layer_norm, softmax, the losses, sums and means, exp, log, pow,
// rsqrt) run in f32, an op whose float operands disagree runs in the widest of them (f16 + f32 is
// f32, as torch's type promotion), and every other op runs in the dtype its operands have. The pass
// inserts `cast` nodes to make that so: one per value and dtype, shared by every op that needs it (as
// torch caches a weight's f16 copy), none of a value that already has the dtype.
//
// It runs after attention fusion (a cast inside the manual chain would hide it from the patterns) and
// before elementwise fusion (which folds the casts into the kernels beside them: a matmul's f16 result
// is cast to f32, has its bias added and GELU applied, and is cast to f16 for the next matmul, in one
// kernel). The front end's eager autocast (compiler/frontend/autocast.ts) asks the same lists.

import { DTYPE_INFO, type DType } from '../ir/dtypes.ts';
import { KilnError } from '../ir/errors.ts';
import { type Attrs, type Graph, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { attentionScalingFor } from '../ir/ops/attention.ts';
import { type OperandType, getOp } from '../ir/registry.ts';
import type { Decision, Pass } from './manager.ts';

/** The dtypes autocast can compute in below f32 (kiln has no bf16 compute yet). */
export type AutocastDType = 'f16';

/** What decided an op's dtype under autocast: torch.autocast's lists, or the promotion of mixed operands. */
export type AutocastRule = 'f16' | 'f32' | 'promote';

/**
 * torch.autocast's f16 list, for kiln's ops: how many leading operands run in f16 (matmul's two; the
 * attention ops' q, k and v, their mask keeping its dtype: a float mask may stay f32).
 */
export const AUTOCAST_F16_OPS: Readonly<Record<string, number>> = { matmul: 2, sdpa: 3, fused_attention: 3 };

/** torch.autocast's f32 list, for kiln's ops: these need f32's range or precision, so their f16 operands are cast up. */
export const AUTOCAST_F32_OPS: ReadonlySet<string> = new Set([
  'layer_norm', 'softmax', 'cross_entropy', 'cross_entropy_rows', 'sum', 'mean', 'exp', 'log', 'pow', 'rsqrt',
]);

/** The dtype autocast wants operand i of an op in, per operand (undefined: leave it), and the rule that says so. */
export interface AutocastPlan {
  readonly rule: AutocastRule | null;
  readonly targets: readonly (DType | undefined)[];
}

const isFloat = (t: OperandType): t is Exclude<OperandType, number> => typeof t !== 'number' && DTYPE_INFO[t.dtype].isFloat;

/** Whether the op's type rule takes these operands as they are (attention takes an f32 mask beside f16 q, k, v). */
function takes(op: string, operands: readonly OperandType[], attrs: Attrs): boolean {
  try {
    getOp(op).infer(operands, attrs);
    return true;
  } catch (e) {
    if (e instanceof KilnError) return false;
    throw e;
  }
}

/** What autocast to `dtype` does to one op with these operand types: the same answer for the graph pass and eager mode. */
export function autocastPlan(op: string, operands: readonly OperandType[], attrs: Attrs, dtype: AutocastDType): AutocastPlan {
  const f16Count = AUTOCAST_F16_OPS[op];
  if (f16Count !== undefined) return { rule: 'f16', targets: operands.map((t, i) => (i < f16Count && isFloat(t) ? dtype : undefined)) };
  if (AUTOCAST_F32_OPS.has(op)) return { rule: 'f32', targets: operands.map((t) => (isFloat(t) ? 'f32' : undefined)) };
  const floats = operands.filter(isFloat).map((t) => t.dtype);
  if (new Set(floats).size < 2 || takes(op, operands, attrs)) return { rule: null, targets: operands.map(() => undefined) };
  const widest = floats.reduce((a, b) => (DTYPE_INFO[b].bytes > DTYPE_INFO[a].bytes ? b : a));
  return { rule: 'promote', targets: operands.map((t) => (isFloat(t) ? widest : undefined)) };
}

/** Why an op runs in the dtype it does, for `kiln explain`. */
function ruleReason(rule: AutocastRule, op: string, dtype: DType): string {
  if (rule === 'f16') return `${op} is on autocast's f16 list`;
  if (rule === 'f32') return `${op} is on autocast's f32 list`;
  return `${op} of mixed float dtypes runs in the widest, ${dtype} (type promotion)`;
}

/**
 * The graph with autocast to `dtype` applied: casts inserted where an op's operands need another
 * dtype, every node's type inferred again (ids kept; casts get new ones). Appends one Decision per op
 * that runs in f16 or got a cast, naming the casts, to `decisions` when given.
 */
export function autocastGraph(graph: Graph, dtype: AutocastDType, decisions?: Decision[]): Graph {
  // One cast per value and dtype, keyed by the value in the new graph.
  const casts = new Map<Node, Map<DType, Node>>();
  return rebuildGraph(graph, (node, { out, mapped }) => {
    const inputs = node.inputs.map(mapped);
    const plan = autocastPlan(node.op, inputs.map((x) => (isNode(x) ? x.type : x)), node.attrs, dtype);
    const made: Node[] = [];
    const castInputs = inputs.map((x, i): Operand => {
      const to = plan.targets[i];
      if (!isNode(x) || to === undefined || x.type.dtype === to) return x;
      const byDType = casts.get(x) ?? casts.set(x, new Map()).get(x)!;
      let cast = byDType.get(to);
      if (!cast) {
        cast = out.add('cast', [x], { dtype: to }, node.loc, node.scope, { rule: 'autocast' });
        byDType.set(to, cast);
        made.push(cast);
      }
      return cast;
    });
    const changed = castInputs.some((x, i) => x !== node.inputs[i]);
    const attrs = plan.rule === 'f16' && node.op === 'fused_attention' ? overflowSafe(node.attrs) : node.attrs;
    if (!changed && attrs === node.attrs) return undefined;
    const type = getOp(node.op).infer(castInputs.map((x) => (isNode(x) ? x.type : x)), attrs);
    const rebuilt = out.addRaw({ ...node, inputs: castInputs, attrs, type });
    if (decisions && plan.rule && (made.length > 0 || plan.rule === 'f16')) {
      const shown = made.map((c) => `%${(c.inputs[0] as Node).id} -> %${c.id}`).join(', ');
      const reason = `${ruleReason(plan.rule, node.op, type.dtype)}${made.length ? `: cast to ${made[0].type.dtype} ${shown}` : ''}${attrs !== node.attrs ? '; q and k scaled by d^-1/4 each before q k^T (pre_qk), so the scores cannot overflow f16' : ''}`;
      decisions.push({ pass: 'autocast', site: rebuilt, applied: true, rule: plan.rule, reason });
    }
    return rebuilt;
  });
}

/**
 * Fused attention in f16 scales q and k each by sqrt(scale) = d^-1/4 before q k^T ("pre_qk", as
 * PyTorch's flash kernels do): the scores then stay within f16's range where the unscaled q k^T
 * would overflow 65504. The rule is attentionScalingFor's (ir/ops/attention.ts), which the type rule checks.
 */
function overflowSafe(attrs: Attrs): Attrs {
  if (typeof attrs.scale !== 'number') return attrs;
  const asked = attrs.scaling === 'pre_qk' ? 'pre_qk' : 'post';
  const scaling = attentionScalingFor('f16', attrs.scale, asked);
  return scaling === asked ? attrs : { ...attrs, scaling };
}

export const autocast: Pass = {
  name: 'autocast',
  stage: 'fused',
  description: 'compile(model, { autocast: "f16" }): matmul and attention in f16, layer_norm, softmax, losses and sums in f32, casts between them',
  run: (graph, ctx) => (ctx.autocast ? autocastGraph(graph, ctx.autocast, ctx.decisions) : graph),
};
