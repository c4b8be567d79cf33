// Attention fusion: every spelling of softmax(q k^T * scale + mask) v, with or without dropout on the
// weights, becomes one fused_attention node (its kernels redraw dropout's bits, so nothing is stored).
// The rules are data; the kernel picker proves constant masks causal at compile time, so nanoGPT's
// manual attention, its sdpa_mask variant and sdpa(isCausal) all get the causal kernel.

import type { Attrs, Graph, Node, Operand } from '../ir/graph.ts';
import { isNode } from '../ir/graph.ts';
import { attentionDims, attentionOperands } from '../ir/ops/attention.ts';
import { checkAttentionMask } from '../ir/ops/fused_attention.ts';
import { KilnError } from '../ir/errors.ts';
import { type CausalVerdict, type MaskKind, firstEmptyRow, proveCausal } from './causal.ts';
import type { Decision, Pass, PassContext } from './manager.ts';
import { type Builder, type Match, type Miss, type Rule, capture, matchRule, oneOf, op, rewriteGraph, scalar } from './pattern.ts';

const q = capture('q');
const k = capture('k');
const v = capture('v');
const qkT = (a: ReturnType<typeof capture>, b: ReturnType<typeof capture>) =>
  op('matmul', [a, b], { attrs: { transposeA: false, transposeB: true }, name: 'qk', what: 'q @ k^T' });

/** The scores, scaled in any of the places models put the scale. Most specific first. */
const scores = oneOf(
  op('mul', [qkT(q, k), scalar('scale', 'the scale')], { what: '(q @ k^T) * scale' }), // nanoGPT: (q @ k^T) * (1/sqrt(d))
  qkT(op('mul', [q, scalar('qScale', 'the scale of q')]), op('mul', [k, scalar('kScale', 'the scale of k')])), // q and k by d^-1/4
  qkT(op('mul', [q, scalar('qScale', 'the scale of q')]), k), // q pre-scaled
  qkT(q, k), // no scale
);

/** The mask: masked_fill(scores, mask, -inf) (a `where` was canonicalized into this), an added mask, or none. */
const maskedScores = oneOf(
  op('masked_fill', [scores, capture('fillMask'), scalar('fillValue', 'the fill value')], { name: 'fill' }),
  op('add', [scores, capture('addMask')], { name: 'addmask' }),
  scores,
);

const lastDim = (d: unknown, node: Node) => d === -1 || d === node.type.shape.length - 1;
const softmaxOfScores = op('softmax', [maskedScores], { attrs: { dim: lastDim }, name: 'softmax', what: 'softmax over the last dim' });

/** The weights: the softmax, or dropout of it (active: canonicalization has removed every inactive dropout), with the graph's rng or without. */
const weights = oneOf(
  op('dropout', [softmaxOfScores, capture('dropRng')], { name: 'dropout', what: 'dropout of the attention weights' }),
  op('dropout', [softmaxOfScores], { name: 'dropout', what: 'dropout of the attention weights' }),
  softmaxOfScores,
);

/** Dropout on the weights as fused_attention's attrs and trailing rng operand; none when p is 0. */
interface FusedDropout {
  p: number;
  seed: number;
  rng?: Operand;
}

function dropoutOfChain(m: Match): FusedDropout | undefined {
  if (!m.has('dropout')) return undefined;
  const attrs = m.node('dropout').attrs;
  return { p: attrs.p as number, seed: attrs.seed as number, rng: m.has('dropRng') ? m.operand('dropRng') : undefined };
}

function dropoutOfSdpa(m: Match): FusedDropout | undefined {
  const attrs = m.node('sdpa').attrs;
  if (!(typeof attrs.dropoutP === 'number' && attrs.dropoutP > 0)) return undefined;
  return { p: attrs.dropoutP, seed: attrs.seed as number, rng: attentionOperands(m.node('sdpa').inputs, (x) => (isNode(x) ? x.type.dtype : undefined)).rng };
}

function scaleOf(m: Match): { scale: number; userScaling: 'post' | 'pre_qk' } {
  if (m.has('scale')) return { scale: m.scalar('scale'), userScaling: 'post' };
  if (m.has('kScale')) return { scale: m.scalar('qScale') * m.scalar('kScale'), userScaling: 'pre_qk' };
  if (m.has('qScale')) return { scale: m.scalar('qScale'), userScaling: 'post' };
  return { scale: 1, userScaling: 'post' };
}

function shapesFit(m: Match): true | string {
  const [qn, kn, vn] = ['q', 'k', 'v'].map((n) => m.operand(n));
  if (!isNode(qn) || !isNode(kn) || !isNode(vn)) return 'q, k and v must be tensors';
  try {
    attentionDims(qn.type, kn.type, vn.type);
  } catch (e) {
    if (e instanceof KilnError) return `${e.detail} (batch dims must be equal, not broadcast)`;
    throw e;
  }
  return true;
}

/** The kernel reads the mask broadcast to the scores [..., L, S]; a number, or a mask that adds dims, does not fit. */
function maskFits(m: Match): true | string {
  const { mask } = maskOf(m);
  if (mask === null) return true;
  if (!isNode(mask)) return `the mask is the number ${mask}, not a tensor`;
  try {
    checkAttentionMask('the attention', mask.type, [...m.node('qk').type.shape]);
  } catch (e) {
    if (e instanceof KilnError) return e.detail;
    throw e;
  }
  return true;
}

/** The mask operand of a match, as the kernel reads it, and what kind it is. */
interface MaskPlan {
  mask: Operand | null;
  kind: MaskKind | null;
}

function maskOf(m: Match): MaskPlan {
  if (m.has('fillMask')) return { mask: m.operand('fillMask'), kind: 'fill' };
  if (m.has('addMask')) return { mask: m.operand('addMask'), kind: 'additive' };
  // sdpa's lone fourth operand is the rng (i32) when it has dropout and no mask.
  if (m.has('keepMask') && m.node('keepMask').type.dtype !== 'i32') return { mask: m.operand('keepMask'), kind: m.node('keepMask').type.dtype === 'bool' ? 'keep' : 'additive' };
  return { mask: null, kind: null };
}

/** The kernel picker: causal when the mask is proved causal (or declared), else a kernel that reads the mask. */
function pickKernel(m: Match, graph: Graph, declaredCausal: boolean): { causal: boolean; kernel: string; reason: string; plan: MaskPlan; emptyRow?: string } {
  const plan = maskOf(m);
  if (declaredCausal) return { causal: true, kernel: 'flash_causal', reason: 'isCausal=true', plan };
  if (!plan.mask || !plan.kind) return { causal: false, kernel: 'flash', reason: 'no mask: every key attended', plan };
  const mask = plan.mask;
  if (!isNode(mask)) return { causal: false, kernel: 'flash_masked', reason: 'the mask is a number', plan };
  const qn = m.node('q');
  const kn = m.node('k');
  const [l, s] = [qn.type.shape[qn.type.shape.length - 2], kn.type.shape[kn.type.shape.length - 2]];
  const value = mask.op === 'constant' ? graph.constants.get(String(mask.attrs.name)) : undefined;
  const label = `%${mask.id}`;
  const verdict: CausalVerdict = value
    ? proveCausal(value, l, s, plan.kind, label)
    : { causal: false, reason: `mask ${label} = ${mask.op} is only known at run time, so it cannot be proved causal` };
  if (verdict.causal) return { causal: true, kernel: 'flash_causal', reason: verdict.reason, plan };
  const empty = value && firstEmptyRow(value, l, s, plan.kind);
  const emptyRow = empty ? `mask ${label} leaves query row ${empty.row}${empty.entry > 0 ? ` of batch entry ${empty.entry}` : ''} with no key` : undefined;
  return { causal: false, kernel: 'flash_masked', reason: verdict.reason, plan, emptyRow };
}

/**
 * What a chain's own softmax gives where the mask keeps no key, as fused_attention attrs: NaN
 * (emptyRows "nan"), and a finite masked_fill value stays a score (`fill`), so such a row averages v
 * as the chain does. sdpa keeps fused_attention's default, zeros (docs/masked-rows.md).
 */
function chainRowAttrs(m: Match, pick: ReturnType<typeof pickKernel>): Attrs {
  if (pick.causal || pick.plan.mask === null) return {};
  const fill = m.has('fillValue') ? m.scalar('fillValue') : -Infinity;
  return Number.isFinite(fill) ? { fill, emptyRows: 'nan' } : { emptyRows: 'nan' };
}

function buildFused(m: Match, b: Builder, ctx: PassContext, graph: Graph, rule: string, declaredCausal: boolean, scale: number, userScaling: 'post' | 'pre_qk', dropout: FusedDropout | undefined): Node {
  const pick = pickKernel(m, graph, declaredCausal);
  // pre_qk multiplies q and k each by sqrt(scale): a negative scale (sqrt would be NaN) is applied after q k^T.
  const scaling = scale < 0 ? 'post' : userScaling === 'pre_qk' ? 'pre_qk' : ctx.attentionScaling;
  const rows = rule === 'attention_chain' ? chainRowAttrs(m, pick) : {};
  const notes = [
    pick.reason,
    // A finite fill keeps every row non-empty: such a row averages v, as in the chain.
    ...(pick.emptyRow && rows.fill === undefined ? [`${pick.emptyRow}: ${rows.emptyRows === 'nan' ? 'NaN there, as the chain\'s softmax gives' : '0 there, as sdpa gives'}`] : []),
    ...(dropout ? [`dropout p=${dropout.p} on the weights, drawn in the kernel`] : []),
  ];
  const attrs: Attrs = { causal: pick.causal, scale, scaling, ...rows, ...(dropout ? { dropoutP: dropout.p, seed: dropout.seed } : {}), kernel: pick.kernel, rule, reason: notes.join('; ') };
  const inputs: Operand[] = [m.operand('q'), m.operand('k'), m.operand('v')];
  if (!pick.causal && pick.plan.mask !== null) {
    // The kernel reads a keep-mask (true = attend) or an additive one; a fill-mask is inverted once.
    inputs.push(pick.plan.kind === 'fill' ? b.add('logical_not', [pick.plan.mask]) : pick.plan.mask);
  }
  if (dropout?.rng !== undefined) inputs.push(dropout.rng);
  return b.add('fused_attention', inputs, attrs);
}

function attentionRules(ctx: PassContext, graph: () => Graph): Rule[] {
  return [
    {
      name: 'attention_chain',
      description: 'dropout?(softmax(mask(q @ k^T * scale))) @ v, the manual attention of nanoGPT and GPT-2 ports',
      pattern: op('matmul', [weights, v], { attrs: { transposeA: false, transposeB: false }, what: 'attention weights @ v' }),
      where: (m) => {
        if (m.has('fillValue') && !(m.scalar('fillValue') <= -1e30)) return `the masked_fill value is ${m.scalar('fillValue')}, not -inf`;
        const fits = shapesFit(m);
        return fits === true ? maskFits(m) : fits;
      },
      build: (m, b) => {
        const { scale, userScaling } = scaleOf(m);
        return buildFused(m, b, ctx, graph(), 'attention_chain', false, scale, userScaling, dropoutOfChain(m));
      },
    },
    {
      name: 'sdpa',
      description: 'scaled_dot_product_attention, with isCausal or a mask, and dropout',
      // The rng operand (i32, last) comes only with dropout; a lone fourth operand may be the mask or the rng.
      pattern: oneOf(
        op('sdpa', [q, k, v, capture('keepMask'), capture('rng')], { name: 'sdpa' }),
        op('sdpa', [q, k, v, capture('keepMask')], { name: 'sdpa' }),
        op('sdpa', [q, k, v], { name: 'sdpa' }),
      ),
      where: (m) => shapesFit(m),
      build: (m, b) => {
        const attrs = m.node('sdpa').attrs;
        const d = m.node('q').type.shape[m.node('q').type.shape.length - 1];
        const scale = typeof attrs.scale === 'number' ? attrs.scale : 1 / Math.sqrt(d);
        return buildFused(m, b, ctx, graph(), 'sdpa', attrs.isCausal === true, scale, 'post', dropoutOfSdpa(m));
      },
    },
  ];
}

/** Why each attention site (softmax or sdpa) was or was not fused: for `kiln explain`. */
function explainSites(before: Graph, rules: readonly Rule[], fusedRoots: Map<Node, Node>): Decision[] {
  const users = before.users();
  const ctxFor = { users, graph: before };
  const decisions: Decision[] = [];
  // A softmax's chain goes on through its users, and through a dropout of it to that dropout's users.
  const next = (n: Node) => users.get(n) ?? [];
  for (const site of before.nodes.filter((n) => n.op === 'softmax' || n.op === 'sdpa')) {
    const candidates = site.op === 'sdpa' ? [site] : next(site).flatMap((u) => (u.op === 'dropout' ? [u, ...next(u)] : [u]));
    const root = candidates.find((u) => fusedRoots.has(u));
    const fused = root && fusedRoots.get(root);
    if (fused) {
      decisions.push({ pass: 'fuse_attention', site, applied: true, rule: String(fused.attrs.rule), kernel: String(fused.attrs.kernel), reason: String(fused.attrs.reason) });
      continue;
    }
    let best: (Miss & { rule: string }) | null = null;
    for (const candidate of candidates) {
      for (const rule of rules) {
        const r = matchRule(rule, candidate, ctxFor);
        if ('miss' in r && (!best || r.miss.depth > best.depth)) best = { ...r.miss, rule: rule.name };
      }
    }
    const reason = best?.reason ?? `the softmax result is not multiplied by v (it is used by ${candidates.map((c) => `%${c.id} = ${c.op}`).join(', ') || 'nothing'})`;
    decisions.push({ pass: 'fuse_attention', site, applied: false, rule: best?.rule, reason });
  }
  return decisions;
}

export const fuseAttention: Pass = {
  name: 'fuse_attention',
  stage: 'fused',
  description: 'rewrites attention chains and sdpa into one fused_attention node; proves constant masks causal',
  run(graph, ctx) {
    let current = graph;
    const rules = attentionRules(ctx, () => current);
    const { graph: out, events } = rewriteGraph(graph, rules, 2);
    current = out;
    const fusedRoots = new Map(events.filter((e) => isNode(e.replacement)).map((e) => [e.root, e.replacement as Node]));
    ctx.decisions.push(...explainSites(graph, rules, fusedRoots));
    return out;
  },
};
