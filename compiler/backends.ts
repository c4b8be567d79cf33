// Execution backends for compiled graphs and for eager ops. `cpu` runs the reference interpreter in f32;
// `webgpu` runs generated WGSL (compiler/webgpu.ts). Both take the same leaf feeds.

import { KilnError } from '../ir/errors.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { type TensorType, formatType, sameType } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import type { EagerBackend } from './frontend/dispatch.ts';
import { Tensor } from './frontend/tensor.ts';

export type BackendName = 'cpu' | 'webgpu';

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
}

export interface ExecutionBackend {
  readonly name: BackendName;
  prepare(graph: Graph, options?: PrepareOptions): Promise<Runner>;
  readonly eager: EagerBackend;
}

/** The host copy of a tensor; device-only tensors must be read back by the caller first. */
export function hostValue(t: Tensor, what: string): HostTensor {
  const host = t.readHost();
  if (host) return host;
  throw new KilnError('KILN_E011', `${what} (${formatType(t.type)}) lives on ${t.device?.backend ?? 'no device'}; read it with await tensor.data() before using it on the cpu backend`);
}

export const cpuBackend: ExecutionBackend = {
  name: 'cpu',
  async prepare(graph) {
    return async (leaf, options) => {
      const out = interpret(graph, (node) => hostValue(leaf(node), `${node.op} "${String(node.attrs.name)}"`), 'f32');
      const result = new Map<string, Tensor>();
      for (const [name, host] of out) {
        const target = options?.writeBack?.get(name);
        if (!target) {
          result.set(name, new Tensor(host.type, { host }));
          continue;
        }
        const parts = writeBackParts(name, host.type, target);
        const size = host.data.length / parts.length;
        for (const [i, t] of parts.entries()) {
          t.host = { type: t.type, data: parts.length === 1 ? host.data : host.data.slice(i * size, (i + 1) * size) };
        }
      }
      return result;
    };
  },
  eager: {
    name: 'cpu',
    run(node, inputs) {
      const args = node.inputs.map((x) => (typeof x === 'number' ? x : hostValue(inputs[eagerInputIndex(x)], `input of ${node.op}`)));
      try {
        return new Tensor(node.type, { host: { type: node.type, data: getOp(node.op).cpu(args, node.attrs, node.type, 'f32') } });
      } catch (e) {
        throw e instanceof KilnError ? e.at(node.loc) : e; // a bad value (an index out of range) names the op's line
      }
    },
  },
};

/** In an eager one-node graph, the input leaf `x<i>` stands for the i-th tensor operand. */
export function eagerInputIndex(leaf: Node): number {
  return Number(String(leaf.attrs.name).slice(1));
}
