// Attention fusion: every spelling of softmax(q k^T * scale + mask) v, with or without dropout on the
// weights, becomes one fused_attention node (its kernels redraw dropout's bits, so nothing is stored).
// Each spelling is model code traced into a pattern (compiler/attention-spellings.ts), one rule each;
// the kernel picker proves constant masks causal at compile time, so nanoGPT's manual attention, its
// sdpa_mask variant and sdpa(isCausal) all get the causal kernel.

import type { Attrs, Graph, Meta, Node, Operand } from '../ir/graph.ts';
import { isNode } from '../ir/graph.ts';
import { attentionDims, attentionScalingFor } from '../ir/ops/attention.ts';
import { checkAttentionMask } from '../ir/ops/fused_attention.ts';
import { KilnError } from '../ir/errors.ts';
import { namedOperands, operandsByName } from '../ir/operands.ts';
import { getOp } from '../ir/registry.ts';
import { ATTENTION_PATTERNS } from './attention-patterns.generated.ts';
import { type CausalVerdict, type MaskKind, firstEmptyRow, proveCausal } from './causal.ts';
import type { Decision, Pass, PassContext } from './manager.ts';
import { type Builder, type Match, type Pattern, type Rule, type RuleMiss, type RewriteEvent, rewriteGraph } from './pattern.ts';
import { ANY, type PatternVocabulary, tracedPattern } from './traced-pattern.ts';

/** How the traced spellings read (compiler/attention-spellings.ts writes them; a generated file holds them). */
const VOCABULARY: PatternVocabulary = {
  what: {
    'matmul{transposeB=true}': 'q @ k^T',
    'matmul{transposeB=false}': 'attention weights @ v',
    softmax: 'softmax over the last dim',
    dropout: 'dropout of the attention weights',
    scale: 'the scale',
    qScale: 'the scale of q',
    kScale: 'the scale of k',
    fill: 'the fill value',
  },
  attrs: {
    softmax: { dim: (d, node) => d === -1 || d === node.type.shape.length - 1 },
    // Canonicalization has removed every inactive dropout; p and the seed are read by the build.
    dropout: { p: ANY, training: ANY, seed: ANY },
    // Which optional operands a node has is checked by name (operandsAgree), not by this attr's spelling.
    sdpa: { isCausal: ANY, scale: ANY, dropoutP: ANY, seed: ANY, optional: ANY },
  },
};

/** Each spelling's pattern, in the generated file's order; traced once, on first use. */
let patterns: { family: 'attention_chain' | 'sdpa'; spelling: string; pattern: Pattern }[] | undefined;
function spellingPatterns() {
  patterns ??= ATTENTION_PATTERNS.map((t) => ({ family: t.family, spelling: t.name, pattern: tracedPattern(t, VOCABULARY) }));
  return patterns;
}

/** Dropout on the weights as fused_attention's attrs and trailing rng operand; none when p is 0. */
interface FusedDropout {
  p: number;
  seed: number;
  rng?: Operand;
}

function dropoutOfChain(m: Match): FusedDropout | undefined {
  if (!m.has('dropout')) return undefined;
  const attrs = m.node('dropout').attrs;
  return { p: attrs.p as number, seed: attrs.seed as number, rng: m.has('rng') ? m.operand('rng') : undefined };
}

function dropoutOfSdpa(m: Match): FusedDropout | undefined {
  const attrs = m.node('sdpa').attrs;
  if (!(typeof attrs.dropoutP === 'number' && attrs.dropoutP > 0)) return undefined;
  return { p: attrs.dropoutP, seed: attrs.seed as number, rng: m.has('rng') ? m.operand('rng') : undefined };
}

/** The spelling's mask and rng are the sdpa node's operands of those names (ir/operands.ts): a spelling without a mask does not take an rng for one. */
function operandsAgree(m: Match): true | string {
  const sdpa = m.node('sdpa');
  const named = operandsByName(getOp('sdpa'), sdpa.inputs, sdpa.attrs);
  for (const name of ['mask', 'rng']) {
    if ((m.has(name) ? m.operand(name) : undefined) !== named[name]) return named[name] === undefined ? `sdpa has no ${name} operand` : `sdpa's ${name} operand is not this spelling's`;
  }
  return true;
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
    // The scores q @ k^T: q's dims with the keys last (shapesFit has checked the batch dims agree).
    const [qn, kn] = [m.node('q'), m.node('k')];
    checkAttentionMask('the attention', mask.type, [...qn.type.shape.slice(0, -1), kn.type.shape[kn.type.shape.length - 2]]);
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
  if (!m.has('mask')) return { mask: null, kind: null };
  const mask = m.operand('mask');
  if (m.has('masked_fill')) return { mask, kind: 'fill' };
  if (m.has('add')) return { mask, kind: 'additive' };
  // sdpa's mask: bool keeps where true, a float mask is added.
  return { mask, kind: isNode(mask) && mask.type.dtype === 'bool' ? 'keep' : 'additive' };
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
  const fill = m.has('fill') ? m.scalar('fill') : -Infinity;
  return Number.isFinite(fill) ? { fill, emptyRows: 'nan' } : { emptyRows: 'nan' };
}

function buildFused(m: Match, b: Builder, ctx: PassContext, graph: Graph, rule: string, declaredCausal: boolean, scale: number, userScaling: 'post' | 'pre_qk', dropout: FusedDropout | undefined): Node {
  const pick = pickKernel(m, graph, declaredCausal);
  // pre_qk multiplies q and k each by sqrt(scale): a negative scale (sqrt would be NaN) is applied after q k^T.
  // In f16 it is always pre_qk, the overflow guard (attentionScalingFor): the user's manual chain gets it too.
  const dtype = m.node('q').type.dtype;
  const scaling = scale < 0 ? 'post' : attentionScalingFor(dtype, scale, userScaling === 'pre_qk' ? 'pre_qk' : ctx.attentionScaling);
  const guards = dtype === 'f16' && scaling === 'pre_qk' && userScaling !== 'pre_qk';
  const rows = rule === 'attention_chain' ? chainRowAttrs(m, pick) : {};
  const notes = [
    pick.reason,
    // A finite fill keeps every row non-empty: such a row averages v, as in the chain.
    ...(pick.emptyRow && rows.fill === undefined ? [`${pick.emptyRow}: ${rows.emptyRows === 'nan' ? 'NaN there, as the chain\'s softmax gives' : '0 there, as sdpa gives'}`] : []),
    ...(dropout ? [`dropout p=${dropout.p} on the weights, drawn in the kernel`] : []),
    ...(guards ? ['f16: q and k each scaled by sqrt(scale) and rounded to f16 before q k^T, so the scores cannot overflow f16 where the scaled ones fit'] : []),
  ];
  const attrs: Attrs = { causal: pick.causal, scale, scaling, ...rows, ...(dropout ? { dropoutP: dropout.p, seed: dropout.seed } : {}) };
  const meta: Meta = { kernel: pick.kernel, rule, reason: notes.join('; ') };
  // The kernel reads a keep-mask (true = attend) or an additive one; a fill-mask is inverted once.
  const mask = pick.causal || pick.plan.mask === null ? undefined : pick.plan.kind === 'fill' ? b.add('logical_not', [pick.plan.mask]) : pick.plan.mask;
  const named = namedOperands<Operand>(getOp('fused_attention'), { q: m.operand('q'), k: m.operand('k'), v: m.operand('v'), mask, rng: dropout?.rng }, attrs);
  return b.add('fused_attention', named.inputs, named.attrs, meta);
}

/** One rule per spelling: the chain's (named attention_chain in dumps and `kiln explain`) and sdpa's. */
function attentionRules(ctx: PassContext, graph: () => Graph): Rule[] {
  return spellingPatterns().map(({ family, spelling, pattern }): Rule =>
    family === 'attention_chain'
      ? {
          name: 'attention_chain',
          description: `the manual attention of nanoGPT and GPT-2 ports, spelled ${spelling}`,
          anchor: 'softmax',
          pattern,
          where: (m) => {
            if (m.has('fill') && !(m.scalar('fill') <= -1e30)) return `the masked_fill value is ${m.scalar('fill')}, not -inf`;
            const fits = shapesFit(m);
            return fits === true ? maskFits(m) : fits;
          },
          build: (m, b) => {
            const { scale, userScaling } = scaleOf(m);
            return buildFused(m, b, ctx, graph(), 'attention_chain', false, scale, userScaling, dropoutOfChain(m));
          },
        }
      : {
          name: 'sdpa',
          description: `scaled_dot_product_attention, spelled ${spelling}`,
          anchor: 'sdpa',
          pattern,
          where: (m) => {
            const agree = operandsAgree(m);
            return agree === true ? shapesFit(m) : agree;
          },
          build: (m, b) => {
            const attrs = m.node('sdpa').attrs;
            const d = m.node('q').type.shape[m.node('q').type.shape.length - 1];
            const scale = typeof attrs.scale === 'number' ? attrs.scale : 1 / Math.sqrt(d);
            return buildFused(m, b, ctx, graph(), 'sdpa', attrs.isCausal === true, scale, 'post', dropoutOfSdpa(m));
          },
        },
  );
}

/** Why each attention site (softmax or sdpa) was or was not fused, from the rewrite's own record: for `kiln explain`. */
function explainSites(before: Graph, events: readonly RewriteEvent[], misses: ReadonlyMap<Node, RuleMiss>): Decision[] {
  const users = before.users();
  return before.nodes
    .filter((n) => n.op === 'softmax' || n.op === 'sdpa')
    .map((site): Decision => {
      const fused = events.find((e) => e.matched.includes(site) && isNode(e.replacement))?.replacement as Node | undefined;
      if (fused) return { pass: 'fuse_attention', site, applied: true, rule: String(fused.meta?.rule), kernel: String(fused.meta?.kernel), reason: String(fused.meta?.reason) };
      const miss = misses.get(site);
      const used = (users.get(site) ?? []).map((u) => `%${u.id} = ${u.op}`).join(', ') || 'nothing';
      return { pass: 'fuse_attention', site, applied: false, rule: miss?.rule, reason: miss?.reason ?? `the softmax result is not multiplied by v (it is used by ${used})` };
    });
}

export const fuseAttention: Pass = {
  name: 'fuse_attention',
  stage: 'fused',
  description: 'rewrites attention chains and sdpa into one fused_attention node; proves constant masks causal',
  run(graph, ctx) {
    let current = graph;
    const rules = attentionRules(ctx, () => current);
    const { graph: out, events, misses } = rewriteGraph(graph, rules, 2);
    current = out;
    ctx.decisions.push(...explainSites(graph, events, misses));
    return out;
  },
};
