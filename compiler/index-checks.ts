// Index checks of a compiled webgpu run: the KILN_E011 the CPU reference raises for a token id or a target
// outside its range (ir/bounds.ts), raised before the runner returns. Indices the run is fed from the host
// (forward's idx and targets) are checked there, before anything is queued, so a bad batch changes no
// weight; indices known at compile time (nanoGPT's arange positions) are checked once; the others (ids
// computed on the GPU, or fed as GPU tensors) are checked by the kernels, and the runner reads the
// kernels' record back (Executor.readIndexErrors), waiting for the GPU, only on calls that have such ids.

import type { Kernel, Program } from '../codegen/index.ts';
import { checkIndices, findIndexFaults, indexError } from '../ir/bounds.ts';
import { KilnError } from '../ir/errors.ts';
import type { Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { constantValues } from '../passes/fold.ts';
import type { Tensor } from './frontend/tensor.ts';

type Check =
  | { readonly kernel: Kernel; readonly known: KilnError | null } // indices known at compile time: their error, if any
  | { readonly kernel: Kernel; readonly leaf: Node } // indices a leaf is fed (through any aliases)
  | { readonly kernel: Kernel }; // indices computed on the GPU: only the kernel can check them

export class IndexChecks {
  private constructor(private readonly checks: readonly Check[]) {}

  /** How each checking kernel of `program` is checked (none when it was lowered with checkBounds false). */
  static of(program: Program): IndexChecks {
    const known = constantValues(program.graph, () => undefined); // buffers are fed per call, as leaves
    return new IndexChecks(
      program.kernels
        .filter((k) => k.indexCheck)
        .map((kernel): Check => {
          const { range, indices } = kernel.indexCheck!;
          const storage = program.storageOf(indices);
          if (getOp(storage.op).leaf && storage.op !== 'constant') return { kernel, leaf: storage };
          const value = knownValue(known, storage);
          if (!value) return { kernel };
          const faults = findIndexFaults(value.data, range);
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

/** The value the graph computes for `node` from compile-time constants alone (factories such as arange, folded constants), if it does. */
function knownValue(known: (node: Node) => HostTensor | undefined, node: Node): HostTensor | undefined {
  try {
    return known(node);
  } catch (e) {
    if (e instanceof KilnError) return undefined; // a bad value on the way: the run meets it, on the GPU
    throw e;
  }
}
