// Index checks of a compiled webgpu run: the KILN_E011 the CPU reference raises for a token id or a target
// outside its range (ir/bounds.ts), raised before the runner returns. Indices the run is fed from the host
// (forward's idx and targets) are checked there, before anything is queued, so a bad batch changes no
// weight; indices known at compile time (nanoGPT's arange positions) are checked once; the others (ids
// computed on the GPU, or fed as GPU tensors) are checked by the kernels, and the runner reads the
// kernels' record back (Executor.readIndexErrors), waiting for the GPU, only on calls that have such ids.

import type { Kernel, Program } from '../codegen/index.ts';
import { checkIndices, findIndexFaults, indexError } from '../ir/bounds.ts';
import { KilnError } from '../ir/errors.ts';
import { type Graph, type Node, isNode } from '../ir/graph.ts';
import type { HostData } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { numel } from '../ir/types.ts';
import type { Tensor } from './frontend/tensor.ts';

type Check =
  | { readonly kernel: Kernel; readonly known: KilnError | null } // indices known at compile time: their error, if any
  | { readonly kernel: Kernel; readonly leaf: Node } // indices a leaf is fed (through any aliases)
  | { readonly kernel: Kernel }; // indices computed on the GPU: only the kernel can check them

/** Compile-time values bigger than this are left to the GPU's check. */
const MAX_KNOWN_ELEMENTS = 1 << 20;

export class IndexChecks {
  private constructor(private readonly checks: readonly Check[]) {}

  /** How each checking kernel of `program` is checked (none when it was lowered with checkBounds false). */
  static of(program: Program): IndexChecks {
    const known = compileTimeValues(program.graph);
    return new IndexChecks(
      program.kernels
        .filter((k) => k.indexCheck)
        .map((kernel): Check => {
          const { range, indices } = kernel.indexCheck!;
          const storage = program.storageOf(indices);
          if (getOp(storage.op).leaf && storage.op !== 'constant') return { kernel, leaf: storage };
          const value = known(storage);
          if (!value) return { kernel };
          const faults = findIndexFaults(value, range);
          return { kernel, known: faults && indexError(range, faults, kernel.node.loc) };
        }),
    );
  }

  /**
   * Raises E011 for the first kernel (in program order) whose indices, known now, are out of range; true
   * when some kernel's indices are only on the GPU this call, so the runner must read the record back.
   */
  beforeRun(tensorOf: (leaf: Node) => Tensor): boolean {
    let onGpu = false;
    for (const check of this.checks) {
      const { range } = check.kernel.indexCheck!;
      if ('known' in check && check.known) throw check.known;
      if ('known' in check) continue;
      const host = 'leaf' in check ? tensorOf(check.leaf).readHost() : undefined;
      if (host) checkIndices(host.data, range, check.kernel.node.loc);
      else onGpu = true;
    }
    return onGpu;
  }
}

/** Values the graph computes from compile-time constants alone (factories such as arange, folded constants), by the CPU reference. */
function compileTimeValues(graph: Graph): (node: Node) => HostData | undefined {
  const values = new Map<Node, HostData | null>();
  const valueOf = (node: Node): HostData | undefined => {
    if (values.has(node)) return values.get(node) ?? undefined;
    let value: HostData | undefined;
    const def = getOp(node.op);
    if (node.op === 'constant') value = graph.constants.get(String(node.attrs.name))?.data;
    else if (!def.leaf && !def.random?.(node.attrs) && numel(node.type.shape) <= MAX_KNOWN_ELEMENTS) {
      const args = node.inputs.map((x) => (isNode(x) ? valueOf(x) : x));
      if (args.every((a) => a !== undefined)) {
        const operands = args.map((a, i) => (typeof a === 'number' ? a : { type: (node.inputs[i] as Node).type, data: a }));
        try {
          value = def.cpu(operands, node.attrs, node.type, 'f32');
        } catch (e) {
          if (!(e instanceof KilnError)) throw e; // a bad value on the way: the run meets it, on the GPU
        }
      }
    }
    values.set(node, value ?? null);
    return value;
  };
  return valueOf;
}
