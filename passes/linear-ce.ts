// Fused linear + cross-entropy, as Liger-Kernel's FusedLinearCrossEntropy does it on CUDA: the loss of
// lm_head's logits never needs the [N, V] logits. GPT-2 at B12 T1024 has 12288 x 50304 of them, 2.47 GB
// in f32 (past WebGPU's 2 GiB binding), and the unfused backward keeps them and their softmax.
//
// Two passes. In the fused stage, `fuse_linear_cross_entropy` rewrites
//   cross_entropy(reshape?(cast?(matmul(x, w, transposeB))), targets)   (casts: autocast's f16 -> f32)
// into fused_linear_cross_entropy(x [N,C], w [V,C], targets) when nothing else reads the logits (a
// forward that returns them, as inference does, is left alone), and records why for `kiln explain`.
// Autograd then gives its x and w gradients as one node each (ir/ops/fused_linear_ce.ts). In the
// lowered stage, `chunk_linear_cross_entropy` unrolls the three nodes over chunks of rows, since kiln
// lowers one op to one kernel and a chunk loop is a sequence of kernels:
//   forward, chunk i:  logits_i = f32(x_i @ w^T) ([R, V] scratch); lse_i = logsumexp_rows(logits_i);
//                      loss += sum(cross_entropy_rows(logits_i, t_i));  loss /= kept_targets(t)
//   backward, chunk i: logits_i again; d_i = (exp(logits_i - lse_i) - onehot(t_i)) * kept_i * g / kept
//                      (one fused elementwise kernel); dx_i = d_i @ w; dw = accumulate(dw, d_i^T @ x_i);
//                      dx = concat(dx_i)
// The memory planner (codegen/memory.ts) gives each chunk's logits and d_i the slots the last chunk
// freed, so the logits take R x V x 4 bytes instead of N x V x 4. With f16 x and w (autocast) each chunk
// computes what the unfused autocast graph computes for its rows: logits_i an f16 matmul of x_i and w
// cast up to f32 (lse and loss in f32, as autocast keeps cross_entropy), d_i cast to f16, and dx_i and
// dw's part f16 matmuls (tensor cores where the GPU has them). dw's f16 parts are summed in f32 and
// rounded to f16 once at the end; the unfused graph's one matmul over all rows rounds once, with no
// per-chunk rounding, so dw is the one result that differs (by the parts' roundings, 2^-11 each). A
// chunk's f16 product adds R x V x 2 bytes beside its f32 logits; x and w get no f32 copies.
// Memory, from the planner (the head and loss of a training step, GPT-2 at B12 T1024, V 50304, C 768, f32):
// unfused 10.08 GB of buffers, four [12288, 50304] tensors of 2.47 GB each (logits, softmax, one-hot and
// its cast); fused 0.885 GB: the largest dw's [50304, 768] (154.5 MB; running sum, part, next sum,
// output), each of the 48 chunks' logits and d [256, 50304] 51.5 MB in slots the last chunk freed.

import { type Graph, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { MAX_CONCAT_INPUTS } from '../ir/ops/backward.ts';
import { LINEAR_CE_OPS, ignoreIndexOf } from '../ir/ops/fused_linear_ce.ts';
import { numel } from '../ir/types.ts';
import { eliminateDeadCode } from './dce.ts';
import type { Decision, Pass } from './manager.ts';
import { type Pattern, type RewriteEvent, type Rule, type RuleMiss, capture, oneOf, op, rewriteGraph } from './pattern.ts';

/** A chunk's logits stay at or under this many bytes, far under WebGPU's 2 GiB binding limit. */
export const CHUNK_SCRATCH_BYTES = 256 * 2 ** 20;

/**
 * Rows per chunk, as Liger-Kernel chooses them: about as many logits per chunk as x has values
 * (N / ceil(V / C) rows), rounded up to a power of two, capped so a chunk's f32 logits fit
 * CHUNK_SCRATCH_BYTES; at most N.
 */
export function chunkRows(n: number, v: number, c: number): number {
  const liger = 2 ** Math.ceil(Math.log2(Math.max(1, Math.ceil(n / Math.ceil(v / c)))));
  const cap = Math.max(1, Math.floor(CHUNK_SCRATCH_BYTES / (4 * v)));
  return Math.max(1, Math.min(n, liger, cap));
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 3 : 1)} MiB`;

// lm_head: x @ w^T, w a [V, C] weight (nn.Linear's layout, or wte tied to it).
const LM_HEAD: Pattern = op('matmul', [capture('x'), capture('w')], { name: 'matmul', what: 'x @ w^T (lm_head)', attrs: { transposeA: (t) => t !== true, transposeB: true } });
const LOGITS: Pattern = oneOf(
  op('reshape', [op('cast', [LM_HEAD], { name: 'upcast' })], { name: 'flatten' }), // autocast: f16 logits, cast, flattened
  op('cast', [op('reshape', [LM_HEAD], { name: 'flatten' })], { name: 'upcast' }), // flattened, then cast to f32
  op('reshape', [LM_HEAD], { name: 'flatten' }), // nanoGPT: logits.view(-1, logits.size(-1))
  op('cast', [LM_HEAD], { name: 'upcast' }),
  LM_HEAD,
);

export const LINEAR_CROSS_ENTROPY: Rule = {
  name: 'linear_cross_entropy',
  description: 'cross_entropy(x @ w^T, targets) becomes one fused_linear_cross_entropy node, run in chunks of rows',
  anchor: 'cross_entropy',
  pattern: op('cross_entropy', [LOGITS, capture('targets')], { name: 'loss' }),
  where: (m) => {
    const [x, w] = [m.operand('x'), m.operand('w')];
    if (!isNode(x) || !isNode(w)) return 'x and w must be tensors';
    if (w.type.shape.length !== 2) return `the weight %${w.id} is ${w.type.dtype}[${w.type.shape}], not a [V, C] matrix`;
    const [v, c] = w.type.shape;
    const logits = (m.node('loss').inputs[0] as Node).type.shape;
    if (logits[1] !== v || x.type.shape[x.type.shape.length - 1] !== c) return `the loss's logits are [${logits}], not x's rows by the weight's ${v} classes`;
    return true;
  },
  build: (m, b) => {
    const [x, w] = [m.node('x'), m.node('w')];
    const [v, c] = w.type.shape;
    const n = numel(x.type.shape) / c;
    const rows = x.type.shape.length === 2 ? x : b.add('reshape', [x], { shape: [n, c] });
    const r = chunkRows(n, v, c);
    const chunks = Math.ceil(n / r);
    const reason = `logits %${m.node('matmul').id} [${n}, ${v}] (${mib(4 * n * v)} in f32) are never stored: ${chunks} chunk${chunks === 1 ? '' : 's'} of ${r} rows, each chunk's logits ${mib(4 * r * v)}`;
    const attrs = { ignoreIndex: ignoreIndexOf('cross_entropy', m.node('loss').attrs) };
    return b.add(LINEAR_CE_OPS.loss, [rows, w, m.operand('targets')], attrs, { rule: 'linear_cross_entropy', kernel: 'chunked', reason });
  },
};

/** Why each cross_entropy was or was not fused with its lm_head matmul, for `kiln explain`. */
function explainSites(before: Graph, events: readonly RewriteEvent[], misses: ReadonlyMap<Node, RuleMiss>): Decision[] {
  return before.nodesOf('cross_entropy').map((site): Decision => {
    const fused = events.find((e) => e.root === site && isNode(e.replacement))?.replacement as Node | undefined;
    if (fused) return { pass: fuseLinearCrossEntropy.name, site, applied: true, rule: 'linear_cross_entropy', kernel: 'chunked', reason: String(fused.meta?.reason) };
    const miss = misses.get(site);
    const logitsUsed = miss?.reason.match(/interior value (%\d+) = \w+ is also used by (.*)$/);
    const reason = logitsUsed
      ? `the logits (${logitsUsed[1]}) are also used by ${logitsUsed[2]}, so they must exist in full (forward() returns them; compileTrainStep keeps only the loss, and fuses); left unfused`
      : (miss?.reason ?? 'the loss is not taken of a matmul');
    return { pass: fuseLinearCrossEntropy.name, site, applied: false, rule: miss?.rule, reason };
  });
}

export const fuseLinearCrossEntropy: Pass = {
  name: 'fuse_linear_cross_entropy',
  stage: 'fused',
  description: "rewrites lm_head's matmul and cross_entropy into fused_linear_cross_entropy when nothing else reads the logits",
  run(graph, ctx) {
    const { graph: out, events, misses } = rewriteGraph(graph, [LINEAR_CROSS_ENTROPY], 2);
    ctx.decisions.push(...explainSites(graph, events, misses));
    // The lm_head matmul and its reshape are dead now: left in, a forward would still compute the logits.
    return events.length > 0 ? eliminateDeadCode(out) : out;
  },
};

// ---- the lowered stage: the three nodes unrolled over chunks of rows ----

/** Adds nodes at one place of the graph being rebuilt, with that node's source line. */
type Add = (op: string, inputs: readonly Operand[], attrs?: Record<string, number | boolean | string | readonly number[]>) => Node;

/** One fused loss's operands in the new graph, the chunking and what the backward reuses. */
interface Site {
  readonly x: Node;
  readonly w: Node;
  readonly targets: Node;
  readonly ignore: number;
  readonly rows: number;
  /** Each chunk's log-sum-exp and the count of kept rows, from the forward when it ran in this graph. */
  lse?: Node[];
  kept?: Node;
}

const siteKey = (node: Node) => `${node.inputs.slice(0, 3).map((x) => (isNode(x) ? x.id : x)).join(',')}:${ignoreIndexOf(node.op, node.attrs)}`;

/** A chunk's logits in f32: the product in x's and w's dtype (f16 under autocast), cast up when it is not f32. */
function chunkLogits(add: Add, xi: Node, w: Node): Node {
  const logits = add('matmul', [xi, w], { transposeA: false, transposeB: true });
  return logits.type.dtype === 'f32' ? logits : add('cast', [logits], { dtype: 'f32' });
}

function chunkBounds(site: Site): [number, number][] {
  const n = site.x.type.shape[0];
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += site.rows) out.push([s, Math.min(n, s + site.rows)]);
  return out;
}

/** The number of kept rows; it checks every target, so a bad one fed from the host stops the run before it starts. */
function keptCount(add: Add, site: Site): Node {
  return add('kept_targets', [site.targets], { ignoreIndex: site.ignore, classes: site.w.type.shape[0] });
}

/** The loss: per chunk, its logits, their log-sum-exp (kept for the backward) and the sum of its rows' losses. */
function chunkedLoss(add: Add, site: Site, keepLse: boolean): Node {
  const kept = (site.kept = keptCount(add, site)); // first: it checks every target, and names a bad one by its row in the batch
  let total: Node | undefined;
  const lse: Node[] = [];
  for (const [s, e] of chunkBounds(site)) {
    const logits = chunkLogits(add, add('slice', [site.x], { dim: 0, start: s, end: e, step: 1 }), site.w);
    if (keepLse) lse.push(add('logsumexp_rows', [logits]));
    const rows = add('cross_entropy_rows', [logits, add('slice', [site.targets], { dim: 0, start: s, end: e, step: 1 })], { ignoreIndex: site.ignore });
    const part = add('sum', [rows], { dims: [0], keepdim: false });
    total = total ? add('add', [total, part]) : part;
  }
  if (keepLse) site.lse = lse;
  return add('div', [total!, kept]); // 0 / 0 (every row ignored) is NaN, as PyTorch
}

/** Concatenates row blocks in a tree of concats (each takes at most MAX_CONCAT_INPUTS). */
function concatRows(add: Add, parts: Node[]): Node {
  while (parts.length > 1) {
    const next: Node[] = [];
    for (let i = 0; i < parts.length; i += MAX_CONCAT_INPUTS) {
      const group = parts.slice(i, i + MAX_CONCAT_INPUTS);
      next.push(group.length === 1 ? group[0] : add('concat', group, { dim: 0 }));
    }
    parts = next;
  }
  return parts[0];
}

/**
 * dx and dw (each only when asked) from one sweep over the chunks, the logits recomputed per chunk. The
 * products with d run in x's and w's dtype (d_i cast to f16 under autocast, as the unfused graph's
 * gradient of its f32 cast); dw's parts are summed in f32 and take w's dtype once at the end.
 */
function chunkedGradients(add: Add, site: Site, g: Node, want: { dx: boolean; dw: boolean }): { dx?: Node; dw?: Node } {
  const { x, w } = site;
  const v = w.type.shape[0];
  const scale = add('div', [g, site.kept ?? keptCount(add, site)]);
  const classes = add('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [v] });
  const dxParts: Node[] = [];
  let dw: Node | undefined;
  chunkBounds(site).forEach(([s, e], i) => {
    const xi = add('slice', [x], { dim: 0, start: s, end: e, step: 1 });
    const ti = add('reshape', [add('slice', [site.targets], { dim: 0, start: s, end: e, step: 1 })], { shape: [e - s, 1] });
    const logits = chunkLogits(add, xi, w);
    const lse = site.lse?.[i] ?? add('logsumexp_rows', [logits]);
    const probs = add('exp', [add('sub', [logits, add('reshape', [lse], { shape: [e - s, 1] })])]);
    const onehot = add('cast', [add('eq', [ti, classes])], { dtype: 'f32' });
    const rowScale = add('mul', [add('cast', [add('ne', [ti, site.ignore])], { dtype: 'f32' }), scale]);
    const d32 = add('mul', [add('sub', [probs, onehot]), rowScale]);
    const d = d32.type.dtype === x.type.dtype ? d32 : add('cast', [d32], { dtype: x.type.dtype });
    if (want.dx) dxParts.push(add('matmul', [d, w], { transposeA: false, transposeB: false }));
    if (want.dw) {
      const part = add('matmul', [d, xi], { transposeA: true, transposeB: false });
      // A running sum in f32 (accumulate widens an f16 part); not an add: fused adds would keep several partial dw's alive.
      dw = !dw ? part : add('accumulate', [dw.type.dtype === 'f32' ? dw : add('cast', [dw], { dtype: 'f32' }), part]);
    }
  });
  const dwOut = dw && dw.type.dtype !== w.type.dtype ? add('cast', [dw], { dtype: w.type.dtype }) : dw;
  return { dx: want.dx ? concatRows(add, dxParts) : undefined, dw: dwOut };
}

/** Unrolls every fused_linear_cross_entropy node and its gradient nodes over chunks of rows. */
export function chunkLinearCrossEntropyGraph(graph: Graph): Graph {
  const ops = Object.values(LINEAR_CE_OPS) as string[];
  if (!graph.nodes.some((n) => ops.includes(n.op))) return graph;
  // Which gradients each (site, g) has: one sweep over the chunks makes both.
  const wanted = new Map<string, { dx: boolean; dw: boolean }>();
  const backwardKey = (n: Node) => `${siteKey(n)}:${(n.inputs[3] as Node).id}`;
  for (const n of graph.nodes) {
    if (n.op === LINEAR_CE_OPS.dx || n.op === LINEAR_CE_OPS.dw) {
      const want = wanted.get(backwardKey(n)) ?? { dx: false, dw: false };
      want[n.op === LINEAR_CE_OPS.dx ? 'dx' : 'dw'] = true;
      wanted.set(backwardKey(n), want);
    }
  }
  const hasBackward = new Set([...wanted.keys()].map((k) => k.slice(0, k.lastIndexOf(':'))));
  const sites = new Map<string, Site>();
  const built = new Map<string, { dx?: Node; dw?: Node }>();
  return rebuildGraph(graph, (node, r) => {
    if (!ops.includes(node.op)) return undefined;
    const add: Add = (op, inputs, attrs = {}) => r.out.add(op, inputs, attrs, node.loc, node.scope);
    const key = siteKey(node);
    const [x, w, targets] = node.inputs.slice(0, 3).map((o) => r.mapped(o) as Node);
    const site = sites.get(key) ?? { x, w, targets, ignore: ignoreIndexOf(node.op, node.attrs), rows: chunkRows(x.type.shape[0], w.type.shape[0], x.type.shape[1]) };
    sites.set(key, site);
    if (node.op === LINEAR_CE_OPS.loss) return chunkedLoss(add, site, hasBackward.has(key));
    const bkey = backwardKey(node);
    const grads = built.get(bkey) ?? chunkedGradients(add, site, r.mapped(node.inputs[3]) as Node, wanted.get(bkey)!);
    built.set(bkey, grads);
    return node.op === LINEAR_CE_OPS.dx ? grads.dx! : grads.dw!;
  });
}

export const chunkLinearCrossEntropy: Pass = {
  name: 'chunk_linear_cross_entropy',
  stage: 'lowered',
  description: 'runs fused_linear_cross_entropy and its gradients in chunks of rows: matmuls, per-row log-sum-exp and losses, never the whole logits',
  run: (graph) => chunkLinearCrossEntropyGraph(graph),
};
