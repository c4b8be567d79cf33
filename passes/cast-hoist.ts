// Cast hoisting: a cast down to a narrower float (autocast's f32 -> f16) moves above the ops that
// only move data (slice, reshape, transpose, ...), toward the value's producer, so that elementwise
// fusion folds it into the producer's kernel and the moves carry half the bytes. nanoGPT under
// autocast: c_attn's bias add is cast to f16 once, in its own kernel, and the q, k and v slices and
// transposes move f16, instead of three f32 slices, transposes and three cast kernels.
//
// It is exact: a cast rounds each element on its own, so casting before or after moving elements
// gives the same bits (the zeros slice_backward, tril and triu write cast to zeros).
//
// When: a move whose every user is a cast to the same narrower float dtype (and which is no graph
// output) is rebuilt on its operands cast instead; the f32 move is then gone, nothing is computed
// twice. A move that something else reads in its own dtype stays where it is (hoisting would copy
// the data twice, once per dtype). A concat moves only when every part is a cast up from that dtype
// (the casts cancel: one cast per part would be more kernels than the one it replaces). Casts of one
// value to one dtype are merged, and a cast down of a cast up from the same dtype is its source:
// f32(x) is exact for an f16 x, so f16(f32(x)) = x. Repeats to a fixed point, so a cast climbs a
// whole chain of moves; in the training step the backward's moves of the same values follow, as
// they differentiate the hoisted forward (autocast and this pass run before differentiation).

import { DTYPE_INFO, type DType } from '../ir/dtypes.ts';
import { type Graph, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import type { Decision, Pass } from './manager.ts';

/** Ops that move elements without arithmetic (or write zeros): a float cast commutes with each. */
export const MOVE_OPS: ReadonlySet<string> = new Set(['reshape', 'transpose', 'permute', 'slice', 'slice_backward', 'tril', 'triu', 'concat']);

const isFloatNode = (x: Operand): x is Node => isNode(x) && DTYPE_INFO[x.type.dtype].isFloat;

/** A cast from one float dtype to a narrower one (f32 -> f16). */
function narrowingCast(node: Node): boolean {
  const x = node.inputs[0];
  return node.op === 'cast' && isFloatNode(node) && isFloatNode(x) && DTYPE_INFO[node.type.dtype].bytes < DTYPE_INFO[x.type.dtype].bytes;
}

/** A float cast up from `dtype` (f16 -> f32): casting it back down to `dtype` gives its operand exactly. */
function castUpFrom(x: Operand, dtype: DType): x is Node {
  return isNode(x) && x.op === 'cast' && isFloatNode(x.inputs[0]) && (x.inputs[0] as Node).type.dtype === dtype && DTYPE_INFO[x.type.dtype].bytes > DTYPE_INFO[dtype].bytes;
}

/** The dtype every user of `move` casts it down to, when all of them do and the move can take the cast on its operands. */
function hoistTarget(move: Node, users: readonly Node[], outputs: ReadonlySet<Node>): DType | undefined {
  if (!MOVE_OPS.has(move.op) || outputs.has(move) || users.length === 0 || !users.every(narrowingCast)) return undefined;
  const dtype = users[0].type.dtype;
  if (users.some((u) => u.type.dtype !== dtype)) return undefined;
  if (move.op === 'concat' && !move.inputs.every((x) => castUpFrom(x, dtype))) return undefined;
  return dtype;
}

/** One round: each move whose users all cast it down is rebuilt on cast operands; duplicate and cancelling casts merged. */
function hoistOnce(graph: Graph, decisions?: Decision[]): { graph: Graph; changed: boolean } {
  const users = graph.users();
  const outputs = new Set(graph.outputs.map((o) => o.node));
  const targets = new Map<Node, DType>();
  for (const n of graph.nodes) {
    const dtype = hoistTarget(n, users.get(n) ?? [], outputs);
    if (dtype) targets.set(n, dtype);
  }
  let changed = targets.size > 0;
  const hoisted = new Map<Node, Node>(); // a move -> the move of its cast operands, in the new graph
  const casts = new Map<Node, Map<DType, Node>>(); // one cast per value and dtype, in the new graph
  const castOf = (x: Node, dtype: DType, like: Node, out: Graph): Node => {
    if (castUpFrom(x, dtype)) return x.inputs[0] as Node;
    const byDType = casts.get(x) ?? casts.set(x, new Map()).get(x)!;
    return byDType.get(dtype) ?? byDType.set(dtype, out.add('cast', [x], { dtype }, like.loc, like.scope, like.meta)).get(dtype)!;
  };
  const result = rebuildGraph(graph, (node, { out, mapped, keep }) => {
    const dtype = targets.get(node);
    if (dtype) {
      const cast = users.get(node)![0]; // the moved cast keeps its source line and meta (autocast's rule)
      const inputs = node.inputs.map((x) => (isNode(x) ? castOf(mapped(x) as Node, dtype, cast, out) : x));
      const type = getOp(node.op).infer(inputs.map((x) => (isNode(x) ? x.type : x)), node.attrs);
      const rebuilt = out.addRaw({ ...node, inputs, type }); // its id kept, as passes keep ids
      hoisted.set(node, rebuilt);
      decisions?.push({ pass: 'hoist_casts', site: rebuilt, applied: true, reason: `the cast to ${dtype} of %${node.id} moved above this ${node.op}, which now moves ${dtype} (exact: a cast rounds each element on its own)` });
      return null;
    }
    if (node.op !== 'cast' || !isFloatNode(node) || !isFloatNode(node.inputs[0])) return undefined;
    const source = node.inputs[0];
    const moved = hoisted.get(source);
    if (moved) return moved; // this cast is now the moved node itself
    const x = mapped(source) as Node;
    const to = node.type.dtype;
    if (castUpFrom(x, to)) return (changed = true), x.inputs[0];
    const byDType = casts.get(x) ?? casts.set(x, new Map()).get(x)!;
    const same = byDType.get(to);
    if (same) return (changed = true), same;
    return byDType.set(to, keep(node)).get(to);
  });
  return { graph: result, changed };
}

/** `graph` with its narrowing casts hoisted; one Decision per move a cast climbed above, appended to `decisions` when given. */
export function hoistCasts(graph: Graph, decisions?: Decision[]): Graph {
  const before = graph;
  for (let round = 0; round < 64; round++) {
    const next = hoistOnce(graph, decisions);
    if (!next.changed) break;
    graph = next.graph;
  }
  return graph === before ? graph : withoutUnreadCasts(graph, before);
}

/** The graph less the casts no node or output reads that `before` did read: casts up a cancelled cast down read (other dead code stays, for `dce`). */
function withoutUnreadCasts(graph: Graph, before: Graph): Graph {
  const users = graph.users();
  const outputs = new Set(graph.outputs.map((o) => o.node));
  const usersBefore = before.users();
  const deadBefore = new Set(before.nodes.filter((n) => usersBefore.get(n)!.length === 0));
  const unread = (n: Node) => n.op === 'cast' && !outputs.has(n) && users.get(n)!.length === 0 && !deadBefore.has(n);
  return rebuildGraph(graph, (n) => (unread(n) ? null : undefined));
}

export const castHoisting: Pass = {
  name: 'hoist_casts',
  stage: 'fused',
  description: 'moves casts down to f16 above slices, reshapes and transposes to the value they cast (exact), so they fold into its kernel; merges duplicate casts',
  run: (graph, ctx) => hoistCasts(graph, ctx.decisions),
};
