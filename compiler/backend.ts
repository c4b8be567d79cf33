// What an execution backend is: it prepares a graph to run (fed leaf by leaf, as compiler/leaves.ts
// declares) and runs eager ops one at a time. backends.ts lists the backends; cpu.ts and webgpu.ts are them.

import type { Graph, Node } from '../ir/graph.ts';
import { type TensorType, formatType, sameType } from '../ir/types.ts';
import type { EagerBackend } from './frontend/dispatch.ts';
import { Tensor } from './frontend/tensor.ts';

/** A graph made ready to run: give it a tensor for each leaf, get the named outputs. */
export type Runner = (leaf: (node: Node) => Tensor, options?: RunOptions) => Promise<Map<string, Tensor>>;

export interface RunOptions {
  /**
   * Outputs stored into existing tensors instead of new ones (a training step updating the
   * parameters and optimizer state it read): each named output's value replaces the tensors'
   * values (one tensor, or the parts an output stacks along its first dim), on the device the
   * backend runs on. These outputs are left out of the returned map.
   */
  readonly writeBack?: ReadonlyMap<string, Tensor | readonly Tensor[]>;
}

/** A write-back target list: one tensor of the output's type, or k tensors the output stacks along a new leading dim. */
export function writeBackParts(output: string, type: TensorType, target: Tensor | readonly Tensor[]): readonly Tensor[] {
  const parts = target instanceof Tensor ? [target] : target;
  const whole = parts.length === 1 && sameType(parts[0].type, type);
  const stacked = type.shape[0] === parts.length && parts.every((t) => sameType(t.type, { dtype: type.dtype, shape: type.shape.slice(1) }));
  if (!whole && !stacked) throw new Error(`output ${output} is ${formatType(type)}; it cannot be written back to ${parts.map((t) => formatType(t.type)).join(', ')}`);
  return parts;
}

/** How a backend prepares a graph. */
export interface PrepareOptions {
  /**
   * webgpu: check indices read from data (token ids, targets) against their range and raise E011 as
   * the cpu backend does (default true). false leaves the check out of the kernels: an index outside
   * its range then reads a clamped row. The cpu backend always checks.
   */
  readonly checkBounds?: boolean;
  /** webgpu: time the alternatives of each kernel that has some and keep the fastest (runtime/webgpu/autotune.ts); unset: KILN_AUTOTUNE=1. */
  readonly autotune?: boolean;
}

export interface ExecutionBackend {
  readonly name: string;
  prepare(graph: Graph, options?: PrepareOptions): Promise<Runner>;
  readonly eager: EagerBackend;
}

/** In an eager one-node graph, the input leaf `x<i>` stands for the i-th tensor operand. */
export function eagerInputIndex(leaf: Node): number {
  return Number(String(leaf.attrs.name).slice(1));
}
