// The cpu backend: compiled graphs and eager ops on the reference interpreter, in f32, on host tensors.

import { KilnError } from '../ir/errors.ts';
import { type HostTensor, roundOutput } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { formatType } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { type ExecutionBackend, eagerInputIndex, writeBackParts } from './backend.ts';
import { Tensor } from './frontend/tensor.ts';

/** The host copy of a tensor; device-only tensors must be read back by the caller first. */
function hostValue(t: Tensor, what: string): HostTensor {
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
        return new Tensor(node.type, { host: { type: node.type, data: roundOutput(node.type.dtype, getOp(node.op).cpu(args, node.attrs, node.type, 'f32'), 'f32') } });
      } catch (e) {
        throw e instanceof KilnError ? e.at(node.loc) : e; // a bad value (an index out of range) names the op's line
      }
    },
  },
};
