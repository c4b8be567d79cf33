// The KV cache, derived from the user's unchanged forward() (issue 18): not a pass of DEFAULT_PIPELINE
// but a derivation over fused-stage graphs, which compiler/generate.ts runs.
//
// planKvCache reads forward() traced at two lengths T >= 2 (`short`, `long`: the same graph, the
// sequence dims sized differently) and proves the decode step exact: every op but attention acts on
// each position alone (the rules of POSITION_RULES, one line per op), the positions come from one
// F.arange(0, T) (the positional source, found by its shape, not its name), and each attention is a
// fused causal one. A model that breaks a rule is refused with a coded error naming the source line.
//
// prefillGraph: forward() at the prompt's length, with each attention's k and v also as outputs,
// permuted to the cache's position-major layout [T, B, H, D] (so one copy per layer and tensor fills
// positions 0..T-1), and the last position's logits sampled (ir/ops/sample.ts) into `tokens`.
// decodeGraph: forward() at T = 1 where the positions become start + step * pos (pos an i32[] input:
// how many positions the cache holds; arange(0, T) gives pos itself) and each fused_attention(q, k,
// v) becomes decode_attention(q, k_cache.L, v_cache.L, k, v, pos) (the caches are input leaves the
// generator feeds with its own device tensors); the new token's k and v come out as [B, H, D] rows.
// At T = 1 nanoGPT's q, k and v are slices of one row of c_attn's output [B, 1, 3C], copied out by a
// kernel each: readPackedQkv lets decode_attention read them in place (its attr columns), and gives the
// new k and v rows as views of that row: output `k.L@c` is [B, W] whose columns [c, c + H*D) of each row
// are the cache rows (cacheRowsOf says where; the generator copies them, one copy per batch row).

import { KilnError } from '../ir/errors.ts';
import { type Graph, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { attentionOperands, dropoutActive } from '../ir/ops/attention.ts';
import { reducedDims } from '../ir/ops/reduce.ts';
import { permutationOf } from '../ir/ops/shape.ts';
import { getOp } from '../ir/registry.ts';
import { type TensorType, formatType, normalizeDim, numel, sameShape } from '../ir/types.ts';
import { eliminateDeadCode } from './dce.ts';

/** What the decode derivation found in forward()'s fused graph, by node position (the same in every trace of it). */
export interface KvCachePlan {
  /** The arange nodes giving the positions. */
  readonly positions: readonly number[];
  /** The fused_attention nodes, one cache layer each, in graph order. */
  readonly sites: readonly number[];
  /** The output holding the logits, and whether forward() already cut them to the last position. */
  readonly logits: { readonly name: string; readonly lastOnly: boolean };
}

/** How the sampled tokens are drawn: ir/ops/sample.ts's attrs. */
export interface SampleAttrs {
  readonly greedy: boolean;
  readonly temperature: number;
  readonly topK: number;
  readonly seed: number;
}

/** What a rule sees of a node: its types at the two lengths, which dims are sequence dims, and its inputs'. */
interface NodeView {
  readonly node: Node;
  /** Dims whose size follows T: this node's, and each tensor input's (scalar inputs: none). */
  readonly seq: readonly number[];
  readonly inputSeq: readonly (readonly number[])[];
  readonly long: Node;
}

/** A rule: null when the op acts on each position alone here, else why not (a clause for the error). */
type PositionRule = (v: NodeView) => string | null;

const none = (dims: readonly number[], seq: readonly number[]) => !dims.some((d) => seq.includes(d));
const reduceRule = (dims: (v: NodeView) => number[]): PositionRule => (v) => (none(dims(v), v.inputSeq[0]) ? null : 'reduces over the positions');
const inputRank = (v: NodeView, i = 0) => (v.node.inputs[i] as Node).type.shape.length;

/** Ops that act on each position alone where these hold; an op not listed (and not elementwise) is refused. */
const POSITION_RULES: Readonly<Record<string, PositionRule>> = {
  layer_norm: reduceRule((v) => [inputRank(v) - 1]), // normalizes each position's features
  softmax: reduceRule((v) => [normalizeDim(v.node.attrs.dim as number, inputRank(v))!]),
  sum: reduceRule((v) => reducedDims('sum', v.node.attrs, inputRank(v))),
  mean: reduceRule((v) => reducedDims('mean', v.node.attrs, inputRank(v))),
  amax: reduceRule((v) => reducedDims('amax', v.node.attrs, inputRank(v))),
  fused_reduce: reduceRule((v) => reducedDims('fused_reduce', v.node.attrs, inputRank(v))),
  embedding: (v) => (v.inputSeq[0].length ? 'looks up rows of a table that depends on the positions' : null), // a row per token id
  matmul: (v) => {
    const [a, b] = v.inputSeq;
    const contractedA = v.node.attrs.transposeA ? inputRank(v, 0) - 2 : inputRank(v, 0) - 1;
    const contractedB = v.node.attrs.transposeB ? inputRank(v, 1) - 1 : inputRank(v, 1) - 2;
    if (a.includes(contractedA) || b.includes(contractedB)) return 'sums over the positions';
    return a.length && b.length ? 'multiplies two position-dependent values (attention scores that were not fused)' : null;
  },
  reshape: (v) => {
    // Each position's block of elements must stay one block: the same elements after the sequence dim.
    const [from, to] = [(v.long.inputs[0] as Node).type.shape, v.long.type.shape];
    const [a, b] = [v.inputSeq[0], v.seq];
    if (a.length !== 1 || b.length !== 1) return a.length || b.length ? 'regroups the positions' : null;
    return numel(from.slice(a[0] + 1)) === numel(to.slice(b[0] + 1)) ? null : 'regroups the positions';
  },
  transpose: () => null,
  permute: () => null,
  slice: () => null, // slices along a sequence dim are checked by lastPosition, below
  concat: (v) => (v.seq.includes(normalizeDim(v.node.attrs.dim as number, v.node.type.shape.length)!) ? 'concatenates along the positions' : null),
  dropout: (v) => (dropoutActive(v.node.attrs) ? 'drops at random (dropout is active: call model.eval() before generating)' : null),
  fused_attention: (v) => {
    const { mask, rng } = attentionOperands('fused_attention', v.node.inputs, v.node.attrs);
    if (v.node.attrs.causal !== true || mask || rng) return 'is attention that is not causal (or has a mask or dropout): a cached decode step would see other keys';
    const rank = v.node.type.shape.length;
    return v.inputSeq.slice(0, 3).every((s) => s.length === 1 && s[0] === rank - 2) ? null : 'is attention whose positions are not its rows [..., T, D]';
  },
};

/** Elementwise ops act on each element alone; anything else needs its rule. */
function ruleFor(op: string): PositionRule | undefined {
  if (Object.hasOwn(POSITION_RULES, op)) return POSITION_RULES[op];
  const def = getOp(op);
  if (def.scalar || op === 'fused_elementwise' || op === 'cast' || op === 'masked_fill' || op === 'where') return () => null;
  return undefined;
}

function refuse(node: Node, why: string): never {
  throw new KilnError('KILN_E011', `kiln cannot derive a KV-cached decode step: %${node.id} ${node.op} ${why}`, node.loc);
}

/** Dims whose size differs between the two traces. */
function seqDims(a: TensorType, b: TensorType): number[] {
  return a.shape.flatMap((d, i) => (d !== b.shape[i] ? [i] : []));
}

/** Checks two fused graphs are forward() at two lengths, node for node; throws naming the first node that differs. */
export function checkSameGraph(a: Graph, b: Graph, what: string): void {
  const differ = (n: Node | undefined, m: Node | undefined): boolean =>
    !n || !m || n.op !== m.op || n.inputs.length !== m.inputs.length || n.type.shape.length !== m.type.shape.length || n.inputs.some((x, i) => isNode(x) !== isNode(m.inputs[i]));
  const at = a.nodes.findIndex((n, i) => differ(n, b.nodes[i]));
  if (at >= 0 || a.nodes.length !== b.nodes.length) {
    const node = a.nodes[at >= 0 ? at : Math.min(a.nodes.length, b.nodes.length) - 1];
    throw new KilnError('KILN_E011', `kiln cannot derive a KV-cached decode step: forward() records another graph at ${what} (first at %${node.id} ${node.op}); make its ops independent of the sequence length`, node.loc);
  }
}

/** A slice that keeps only the last position of a sequence dim (nanoGPT's x[:, [-1], :]). */
function lastPosition(node: Node, long: Node, inputSeq: readonly number[]): boolean {
  if (node.op !== 'slice') return false;
  const x = long.inputs[0] as Node;
  const dim = normalizeDim(long.attrs.dim as number, x.type.shape.length)!;
  if (!inputSeq.includes(dim)) return false;
  const size = x.type.shape[dim];
  const start = (long.attrs.start as number) < 0 ? (long.attrs.start as number) + size : (long.attrs.start as number);
  return long.type.shape[dim] === 1 && start === size - 1 && (long.attrs.step ?? 1) === 1;
}

/**
 * Proves a decode step of forward() exact from its fused graphs at two lengths >= 2: what feeds the
 * positions, where the attention sites are, and which output holds the logits.
 */
export function planKvCache(short: Graph, long: Graph): KvCachePlan {
  checkSameGraph(short, long, 'two sequence lengths');
  const seq = new Map<Node, number[]>();
  const lastOnly = new Set<Node>();
  const positions: number[] = [];
  const sites: number[] = [];
  for (const [i, node] of short.nodes.entries()) {
    const long_ = long.nodes[i];
    const dims = seqDims(node.type, long_.type);
    seq.set(node, dims);
    const inputs = node.inputs.filter(isNode);
    const inputSeq = node.inputs.map((x) => (isNode(x) ? seq.get(x)! : []));
    const fromSeq = inputs.some((x) => seq.get(x)!.length > 0);
    if (dims.length > 1) refuse(node, `holds ${dims.length} position dims (${formatType(node.type)} and ${formatType(long_.type)} at two lengths): it relates positions to each other (unfused attention?)`);
    if (inputs.some((x) => lastOnly.has(x))) {
      if (fromSeq) refuse(node, 'combines the last position with every position');
      lastOnly.add(node);
      continue;
    }
    if (getOp(node.op).leaf || inputs.length === 0) {
      if (!dims.length) continue;
      if (node.op === 'input') continue; // the token ids
      if (node.op === 'arange') {
        positions.push(i);
        continue;
      }
      refuse(node, `(${formatType(node.type)}) depends on the sequence length but comes from neither the token ids nor F.arange(0, T)`);
    }
    if (!fromSeq) {
      if (dims.length) refuse(node, `makes a value shaped by the sequence length ([${node.type.shape.join(',')}]) from values that are not; kiln finds positions only as F.arange(0, T)`);
      continue;
    }
    if (lastPosition(node, long_, inputSeq[0])) {
      lastOnly.add(node);
      continue;
    }
    if (node.op === 'slice') {
      const dim = normalizeDim(node.attrs.dim as number, (node.inputs[0] as Node).type.shape.length)!;
      if (inputSeq[0].includes(dim)) refuse(node, 'slices the positions other than to the last one; a decode step sees one token');
    }
    const rule = ruleFor(node.op);
    if (!rule) refuse(node, 'is not known to act on each position alone (kiln refuses what it cannot prove for the cache)');
    const why = rule({ node, seq: dims, inputSeq, long: long_ });
    if (why) refuse(node, why);
    if (node.op === 'fused_attention') sites.push(i);
  }
  const logits = short.outputs.find((o) => o.name === 'logits') ?? (short.outputs.length === 1 ? short.outputs[0] : undefined);
  if (!logits) throw new KilnError('KILN_E011', `kiln cannot find the logits among forward()'s outputs (${short.outputs.map((o) => o.name).join(', ')}); return them as the only tensor or as \`logits\``);
  const last = lastOnly.has(logits.node);
  const dims = seq.get(logits.node)!;
  if (!last && (dims.length !== 1 || dims[0] !== logits.node.type.shape.length - 2)) refuse(logits.node, `gives logits ${formatType(logits.node.type)} with no position dim before the vocabulary`);
  if (positions.length === 0 && sites.length === 0) throw new KilnError('KILN_E011', 'kiln cannot derive a KV-cached decode step: forward() has no causal attention to cache');
  return { positions, sites, logits: { name: logits.name, lastOnly: last } };
}

/** The last position's logits as [rows, V], then sampled: outputs `tokens` (and `logits` when asked). */
function sampleLast(graph: Graph, logits: Node, lastOnly: boolean, sampling: SampleAttrs, keepLogits: boolean, counter: () => Node): { name: string; node: Node }[] {
  const rank = logits.type.shape.length;
  const t = logits.type.shape[rank - 2];
  let last = lastOnly || t === 1 ? logits : graph.add('slice', [logits], { dim: rank - 2, start: t - 1, end: t, step: 1 }, logits.loc, logits.scope);
  const v = logits.type.shape[rank - 1];
  last = graph.add('reshape', [last], { shape: [numel(last.type.shape) / v, v] }, logits.loc, logits.scope);
  const attrs = { greedy: sampling.greedy, ...(sampling.greedy ? {} : { temperature: sampling.temperature, topK: sampling.topK, seed: sampling.seed }) };
  const tokens = graph.add('sample', sampling.greedy ? [last] : [last, counter()], attrs, logits.loc, logits.scope);
  return [{ name: 'tokens', node: tokens }, ...(keepLogits ? [{ name: 'logits', node: last }] : [])];
}

function input(graph: Graph, name: string, type: TensorType): Node {
  return graph.add('input', [], { name, dtype: type.dtype, shape: [...type.shape] });
}

export interface DerivedOptions {
  readonly sampling: SampleAttrs;
  /** Also output the sampled position's logits [rows, V] (tests, and callers that show them). */
  readonly keepLogits?: boolean;
  /** decodeGraph: false keeps q, k, v as their own tensors (a copy kernel each) instead of reading them in place (tests compare the two). */
  readonly inPlaceQkv?: boolean;
}

/**
 * forward() at the prompt's length T as the generator's prefill: outputs `tokens`, then, with
 * `cacheRows`, `k.L` and `v.L` [T, B, H, D] for each attention site L. Dead nodes are removed.
 */
export function prefillGraph(fused: Graph, plan: KvCachePlan, options: DerivedOptions & { cacheRows: boolean }): Graph {
  const g = rebuildGraph(fused, () => undefined);
  const outputs: { name: string; node: Node }[] = [];
  let counter: Node | undefined;
  const logits = g.outputs.find((o) => o.name === plan.logits.name)!.node;
  outputs.push(...sampleLast(g, logits, plan.logits.lastOnly, options.sampling, options.keepLogits === true, () => (counter ??= input(g, 'counter', { dtype: 'i32', shape: [] }))));
  if (options.cacheRows) {
    for (const [layer, i] of plan.sites.entries()) {
      const site = g.nodes[i];
      if (site?.op !== 'fused_attention') throw new Error(`prefill graph: node ${i} is ${site?.op}, not the attention the plan found`);
      const rank = site.type.shape.length;
      const toCache = [rank - 2, ...Array.from({ length: rank - 2 }, (_, d) => d), rank - 1]; // [B, H, T, D] -> [T, B, H, D]
      for (const [name, x] of [['k', site.inputs[1]], ['v', site.inputs[2]]] as const) {
        outputs.push({ name: `${name}.${layer}`, node: g.add('permute', [x as Node], { dims: toCache }, site.loc, site.scope) });
      }
    }
  }
  g.setOutputs(outputs);
  return eliminateDeadCode(g);
}

/**
 * forward() at T = 1 as one decode step against caches of `capacity` positions: inputs `idx` (the new
 * token), `pos`, `counter` (when drawing) and `k_cache.L`, `v_cache.L`; outputs `tokens`, then `k.L`
 * and `v.L` [B, H, D], the new token's rows. `fused` must be the graph planKvCache read, traced at T = 1.
 */
export function decodeGraph(fused: Graph, plan: KvCachePlan, capacity: number, options: DerivedOptions): Graph {
  const positions = new Set(plan.positions.map((i) => fused.nodes[i]));
  const sites = new Map(plan.sites.map((i, layer) => [fused.nodes[i], layer]));
  let pos: Node | undefined;
  const rows: { name: string; node: Node }[] = [];
  const g = rebuildGraph(fused, (node, r) => {
    if (positions.has(node)) {
      // positions arange(start, step)[0:1] become start + step * pos: the new token's position
      pos ??= input(r.out, 'pos', { dtype: 'i32', shape: [] });
      const step = node.attrs.step as number;
      if (node.attrs.start === 0 && step === 1 && node.type.dtype === 'i32') return r.out.add('reshape', [pos], { shape: [1] }, node.loc, node.scope); // arange(0, 1) + pos is [pos]: a view
      const arange = r.keep(node);
      let offset: Operand = step === 1 ? pos : r.out.add('mul', [pos, step], {}, node.loc, node.scope);
      if (arange.type.dtype !== 'i32') offset = r.out.add('cast', [offset], { dtype: arange.type.dtype }, node.loc, node.scope);
      return r.out.add('add', [arange, offset], {}, node.loc, node.scope);
    }
    const layer = sites.get(node);
    if (layer === undefined) return undefined;
    const [q, k, v] = node.inputs.slice(0, 3).map((x) => r.mapped(x) as Node);
    if (q.type.shape[q.type.shape.length - 2] !== 1) throw new Error(`decode graph: the attention's query is ${formatType(q.type)}, not one position`);
    const cacheShape = [capacity, ...k.type.shape.slice(0, -2), k.type.shape[k.type.shape.length - 1]];
    const kCache = input(r.out, `k_cache.${layer}`, { dtype: k.type.dtype, shape: cacheShape });
    const vCache = input(r.out, `v_cache.${layer}`, { dtype: v.type.dtype, shape: cacheShape });
    pos ??= input(r.out, 'pos', { dtype: 'i32', shape: [] });
    const attrs = { scale: node.attrs.scale as number, scaling: (node.attrs.scaling as string) ?? 'post' };
    const out = r.out.add('decode_attention', [q, kCache, vCache, k, v, pos], attrs, node.loc, node.scope, { rule: 'kv_cache', reason: `fused_attention %${node.id} against cache layer ${layer} (${capacity} positions)` });
    const rowShape = [...k.type.shape.slice(0, -2), k.type.shape[k.type.shape.length - 1]];
    for (const [name, x] of [['k', k], ['v', v]] as const) rows.push({ name: `${name}.${layer}`, node: r.out.add('reshape', [x], { shape: rowShape }, node.loc, node.scope) });
    return out;
  });
  if (!pos && plan.positions.length) throw new Error('decode graph: the positions were not found at T = 1');
  let counter: Node | undefined;
  const logits = g.outputs.find((o) => o.name === plan.logits.name)!.node;
  const sampled = sampleLast(g, logits, plan.logits.lastOnly, options.sampling, options.keepLogits === true, () => (counter ??= input(g, 'counter', { dtype: 'i32', shape: [] })));
  g.setOutputs([...sampled, ...rows]);
  if (!sameShape(sampled[0].node.type.shape, [sampled[0].node.type.shape[0]])) throw new Error('decode graph: tokens are not one per row');
  const views = viewsAtOnePosition(g);
  return eliminateDeadCode(options.inPlaceQkv === false ? views : readPackedQkv(views));
}

/** A step's new rows of one cache in a decode graph: output `output` [R, W], columns [column, column + count) of each of its R rows. */
export interface CacheRows {
  readonly output: string;
  readonly column: number;
  readonly count: number;
}

/** Where decodeGraph's graph gives the new rows of cache `k_cache.L` or `v_cache.L`: output `k.L` (whole rows) or `k.L@c` (packed). */
export function cacheRowsOf(graph: Graph, cache: string): CacheRows {
  const stem = cache.replace('_cache', '');
  const out = graph.outputs.find((o) => o.name === stem || o.name.startsWith(`${stem}@`));
  const leaf = graph.nodes.find((n) => n.op === 'input' && n.attrs.name === cache);
  if (!out || !leaf) throw new Error(`decode graph: no output holds the new rows of ${cache}`);
  const rows = numel(out.node.type.shape.slice(0, -1));
  const count = numel(leaf.type.shape.slice(1)) / rows;
  const column = out.name === stem ? 0 : Number(out.name.slice(stem.length + 1));
  if (!Number.isInteger(count) || column + count > out.node.type.shape[out.node.type.shape.length - 1]) throw new Error(`decode graph: output ${out.name} ${formatType(out.node.type)} cannot hold rows of ${cache} ${formatType(leaf.type)}`);
  return { output: out.name, column, count };
}

/** The last-dim slice (step 1) that `x` views through reshapes, with its first column; undefined for anything else. */
function sliceUnderViews(x: Node): { source: Node; column: number; width: number } | undefined {
  let n = x;
  while (n.op === 'reshape') n = n.inputs[0] as Node;
  if (n.op !== 'slice' || (n.attrs.step ?? 1) !== 1) return undefined;
  const source = n.inputs[0] as Node;
  const rank = source.type.shape.length;
  if (normalizeDim(n.attrs.dim as number, rank) !== rank - 1) return undefined;
  const size = source.type.shape[rank - 1];
  const start = n.attrs.start as number;
  return { source, column: start < 0 ? start + size : start, width: n.type.shape[rank - 1] };
}

/**
 * decode_attention(q, k_cache, v_cache, k_new, v_new, pos) whose q, k_new and v_new view slices of one
 * tensor's last dim (nanoGPT's c_attn(x).split(C, 2) then view and transpose, views at T = 1) reads them
 * from that tensor (attr columns), and each cache's rows output `k.L` that views such a slice becomes the
 * whole rows `k.L@column`: the slices, one copy kernel each, are left without users (dead code).
 */
function readPackedQkv(graph: Graph): Graph {
  const rowsOutputs = new Map<Node, { source: Node; column: number }>();
  for (const o of graph.outputs) {
    const slice = /^[kv]\.\d+$/.test(o.name) ? sliceUnderViews(o.node) : undefined;
    if (slice && numel(o.node.type.shape) === numel(slice.source.type.shape) / slice.source.type.shape[slice.source.type.shape.length - 1] * slice.width) rowsOutputs.set(o.node, slice);
  }
  const g = rebuildGraph(graph, (node, r) => {
    const rows = rowsOutputs.get(node);
    if (rows) {
      const w = rows.source.type.shape[rows.source.type.shape.length - 1];
      return r.out.add('reshape', [r.mapped(rows.source)], { shape: [numel(rows.source.type.shape) / w, w] }, node.loc, node.scope, { rule: 'kv_cache', reason: `the new rows are columns ${rows.column}.. of each row: no copy` });
    }
    if (node.op !== 'decode_attention') return undefined;
    const [q, kCache, , kNew, vNew, pos] = node.inputs as Node[];
    const slices = [q, kNew, vNew].map(sliceUnderViews);
    const source = slices[0]?.source;
    if (!source || slices.some((x) => x?.source !== source)) return undefined;
    const batch = kCache.type.shape.slice(1, -1);
    const d = kCache.type.shape[kCache.type.shape.length - 1];
    const w = source.type.shape[source.type.shape.length - 1];
    const packed = [...batch.slice(0, -1), 1, w];
    if (numel(source.type.shape) !== numel(packed) || slices.some((x) => x!.width !== batch[batch.length - 1] * d)) return undefined;
    const columns = slices.map((x) => x!.column);
    if (w % d !== 0 || columns.some((c) => c % d !== 0)) return undefined;
    let operand = r.mapped(source) as Node;
    if (!sameShape(operand.type.shape, packed)) operand = r.out.add('reshape', [operand], { shape: packed }, node.loc, node.scope);
    const inputs = [operand, r.mapped(kCache), r.mapped(node.inputs[2]), operand, operand, r.mapped(pos)];
    const reason = `${String(node.meta?.reason ?? 'decode attention')}; q, k, v read in place from columns ${columns.join(', ')} of %${source.id}`;
    return r.out.add('decode_attention', inputs, { ...node.attrs, columns }, node.loc, node.scope, { ...node.meta, reason });
  });
  g.setOutputs(g.outputs.map((o, i) => {
    const rows = rowsOutputs.get(graph.outputs[i].node);
    return rows ? { name: `${o.name}@${rows.column}`, node: o.node } : o;
  }));
  return g;
}

/** The permutation a transpose or permute node applies, or undefined for other ops. */
function permutation(node: Node): number[] | undefined {
  if (node.op !== 'transpose' && node.op !== 'permute') return undefined;
  return permutationOf(node.op, node.attrs, node.type.shape.length);
}

/**
 * At T = 1 the sequence dim has size 1: a transpose that moves only size-1 dims (nanoGPT's
 * [B, 1, H, D] -> [B, H, 1, D]) keeps every element where it was, and the last position's slice keeps
 * the whole dim: each is a reshape, so a view with no kernel.
 */
function viewsAtOnePosition(graph: Graph): Graph {
  return rebuildGraph(graph, (node, r) => {
    const whole = node.op === 'slice' && sameShape(node.type.shape, (node.inputs[0] as Node).type.shape); // x[:, [-1]] of one position
    if (whole) return r.out.add('reshape', [r.mapped(node.inputs[0])], { shape: [...node.type.shape] }, node.loc, node.scope, { rule: 'kv_cache', reason: 'a slice that keeps the whole dim' });
    const perm = permutation(node);
    if (!perm) return undefined;
    const x = node.inputs[0] as Node;
    const moved = perm.filter((d) => x.type.shape[d] !== 1);
    if (!moved.every((d, i) => i === 0 || d > moved[i - 1])) return undefined;
    return r.out.add('reshape', [r.mapped(x)], { shape: [...node.type.shape] }, node.loc, node.scope, { rule: 'kv_cache', reason: 'a transpose of size-1 dims moves no element' });
  });
}
