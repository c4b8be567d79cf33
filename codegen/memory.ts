// Memory planning: buffer lifetimes from the kernel schedule. A computed value's buffer is free once
// the last kernel reading it has been dispatched, and a later kernel's output can take it. Graph
// outputs keep buffers of their own. Dawn orders the dispatches of a pass by their buffer usage, so
// a kernel writing a reused buffer runs after the last kernel that read it.

import { bufferBytes } from '../ir/dtypes.ts';
import type { Node } from '../ir/graph.ts';
import { numel } from '../ir/types.ts';
import type { Program } from './index.ts';

export interface BufferPlan {
  /** The slot holding each computed node's value (storage nodes only; aliases share their source's). */
  readonly slotOf: ReadonlyMap<Node, number>;
  /** Bytes of each slot: the largest value it holds. */
  readonly slotBytes: readonly number[];
  /** The node of each slot that needs the most bytes (named when the allocation fails). */
  readonly largest: readonly Node[];
}

const bytesOf = (node: Node) => bufferBytes(node.type.dtype, numel(node.type.shape));

export function planBuffers(program: Program): BufferPlan {
  const { kernels, graph, storageOf } = program;
  const lastUse = new Map<Node, number>();
  kernels.forEach((k, i) => {
    for (const x of k.inputs) lastUse.set(storageOf(x), i);
  });
  for (const o of graph.outputs) lastUse.set(storageOf(o.node), Infinity);

  const slotOf = new Map<Node, number>();
  const slotBytes: number[] = [];
  const largest: Node[] = [];
  const free: number[] = [];
  const releases: Node[][] = kernels.map(() => []); // nodes whose last reader is kernel i
  kernels.forEach((k, i) => {
    const node = k.node;
    const need = bytesOf(node);
    const last = lastUse.get(node) ?? i; // never read: free after its own kernel
    // Reuse the free slot closest in size (it grows if smaller); outputs get a slot of their own.
    let slot = -1;
    if (last !== Infinity) {
      let best = Infinity;
      for (const s of free) {
        const waste = Math.abs(slotBytes[s] - need);
        if (waste < best) [best, slot] = [waste, s];
      }
    }
    if (slot >= 0) free.splice(free.indexOf(slot), 1);
    else slot = slotBytes.push(0) - 1;
    if (need > slotBytes[slot]) [slotBytes[slot], largest[slot]] = [need, node];
    slotOf.set(node, slot);
    if (last !== Infinity) releases[Math.max(i, last)].push(node);
    // Values whose last reader is this kernel are free for the next kernels' outputs.
    for (const done of releases[i]) free.push(slotOf.get(done)!);
  });
  return { slotOf, slotBytes, largest };
}
