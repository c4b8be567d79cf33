// kiln eval: a contract outside checks call; keep its flags and behaviour exactly.
//   kiln eval MODEL.ts --weights W.safetensors --inputs I.safetensors --out O.safetensors
//     --outputs logits,loss [--device webgpu|cpu] [--mode eager|compiled] [--config JSON] [--grads] [--dtype float16|float32]

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import type { HostData, HostTensor } from '../../ir/host.ts';
import { readSafetensors, writeSafetensors } from '../../runtime/safetensors.ts';
import { gradients, gradsOf } from '../autograd.ts';
import { hostTensors } from '../checkpoint.ts';
import { compile } from '../compile.ts';
import { useBackend } from '../eager.ts';
import { autocast } from '../frontend/autocast.ts';
import type { BackendName } from '../backends.ts';
import type { Module } from '../frontend/module.ts';
import { noGrad } from '../frontend/grad-mode.ts';
import { Tensor } from '../frontend/tensor.ts';
import { forwardArgNames } from '../tracer.ts';
import { stringFlag } from './args.ts';
import type { Command } from './main.ts';
import { fileError } from './report.ts';
import { DTYPE_FLAG, autocastFlag, loadModel } from './model.ts';

export const evalCommand: Command = {
  spec: {
    name: 'eval',
    summary: 'run a model on inputs from a safetensors file and write the named outputs',
    usage: 'kiln eval MODEL.ts --weights W.safetensors --inputs I.safetensors --out O.safetensors --outputs logits,loss [--device webgpu|cpu] [--mode eager|compiled] [--config JSON] [--grads] [--dtype float16|float32]',
    example: `kiln eval examples/nanogpt/model.ts --weights w.safetensors --inputs in.safetensors --out out.safetensors --outputs logits,loss --config '{"flash":false}'`,
    positionals: ['MODEL.ts'],
    flags: [
      { name: 'weights', kind: 'string', required: true, file: 'input', help: 'checkpoint; its __metadata__.config is the model config' },
      { name: 'inputs', kind: 'string', required: true, file: 'input', help: "tensors named as forward()'s parameters (idx, targets); others are ignored" },
      { name: 'out', kind: 'string', required: true, file: 'output', help: 'safetensors file to write the outputs to' },
      { name: 'outputs', kind: 'string', required: true, help: "comma-separated names of forward()'s returned tensors" },
      { name: 'device', kind: 'string', choices: ['webgpu', 'cpu'], default: 'webgpu', help: 'where to run' },
      { name: 'mode', kind: 'string', choices: ['eager', 'compiled'], default: 'compiled', help: 'op by op, or compile() first' },
      { name: 'config', kind: 'string', help: 'JSON merged over the checkpoint config, e.g. {"flash":false}' },
      { name: 'grads', kind: 'boolean', help: "also write grad.<param name> for every parameter: the gradient of forward()'s loss, on --device (compiled: autograd on the traced graph; eager: loss.backward())" },
      DTYPE_FLAG,
    ],
  },

  async run(args, mod) {
    const file = args.positionals[0];
    const dtype = autocastFlag('eval', args);
    const { model } = await loadModel('eval', mod, file, stringFlag(args, 'weights'), stringFlag(args, 'config'));
    const inputsPath = stringFlag(args, 'inputs')!;
    const inputs = hostTensors(await readSafetensors(inputsPath), inputsPath);
    const names = forwardArgNames(model.forward);
    // Missing inputs are left undefined, so forward's defaults apply (targets = null).
    const forwardArgs = names.map((n) => (inputs.has(n) ? new Tensor(inputs.get(n)!.type, { host: inputs.get(n)! }) : undefined));
    if (!forwardArgs.some((a) => a)) {
      throw new KilnError('KILN_E014', `${inputsPath} has none of forward()'s inputs (${names.join(', ')}); it has ${[...inputs.keys()].join(', ') || 'no tensors'}`);
    }

    const device = stringFlag(args, 'device') as BackendName;
    const eager = stringFlag(args, 'mode') === 'eager';
    const withGrads = Boolean(args.flags.get('grads'));
    let result: unknown;
    if (eager) {
      await useBackend(device);
      // Eager --grads differentiates the tape this forward records (loss.backward()); else nothing is recorded.
      // --dtype float16: the forward inside autocast('f16', ...), as torch.autocast wraps it; backward() after it, outside.
      const forward = () => autocast(dtype ?? false, () => (model.forward as (...a: unknown[]) => unknown)(...forwardArgs));
      result = withGrads ? forward() : noGrad(forward);
    } else {
      result = await (compile(model, { backend: device, autocast: dtype ?? false }) as unknown as (...a: unknown[]) => Promise<unknown>)(...forwardArgs);
    }

    const wanted = stringFlag(args, 'outputs')!.split(',').map((s) => s.trim()).filter(Boolean);
    const returned = namedTensors(result);
    const out = new Map<string, { dtype: 'F32' | 'I32' | 'BOOL'; shape: number[]; data: ArrayBufferView }>();
    for (const name of wanted) {
      const t = returned.get(name);
      if (!t) throw new KilnError('KILN_E014', `forward() returned no tensor "${name}"; it returned ${[...returned.keys()].join(', ') || 'none'}`);
      out.set(name, serialized(t, await t.data()));
    }
    if (withGrads) {
      const grads = eager ? await eagerGradients(model, returned) : await gradients(model, forwardArgs, { backend: device, autocast: dtype });
      for (const [name, g] of grads) out.set(`grad.${name}`, serialized(new Tensor(g.type, { host: g }), g.data));
    }
    const outPath = stringFlag(args, 'out')!;
    await writeSafetensors(outPath, out).catch((e: unknown) => {
      throw fileError(e, outPath, '--out');
    });
  },
};

/** `loss.backward()` on the eager result's `loss` (or only) tensor; a parameter it does not reach gets zeros, as gradients() gives. */
async function eagerGradients(model: Module, returned: ReadonlyMap<string, Tensor>): Promise<Map<string, HostTensor>> {
  const loss = returned.get('loss') ?? (returned.size === 1 ? [...returned.values()][0] : undefined);
  if (!loss) throw new KilnError('KILN_E011', `--grads needs forward() to return a "loss" tensor (or a single tensor); it returned ${[...returned.keys()].join(', ')}`);
  loss.backward();
  const grads = await gradsOf(model);
  for (const [name, p] of model.namedParameters()) if (!grads.has(name)) grads.set(name, { type: p.type, data: new Float32Array(p.numel()) });
  return grads;
}

/** forward's tensors by name: object keys, array indices, or "output" for a lone tensor. */
function namedTensors(result: unknown): Map<string, Tensor> {
  if (result instanceof Tensor) return new Map([['output', result]]);
  if (result && typeof result === 'object') {
    return new Map(Object.entries(result).filter((e): e is [string, Tensor] => e[1] instanceof Tensor));
  }
  return new Map();
}

/** Floats as F32 (f16 values are exact in it), integers stay I32, bools BOOL; a 0-d tensor is written as [1], as PyTorch's fixtures store a loss. */
function serialized(t: Tensor, data: HostData): { dtype: 'F32' | 'I32' | 'BOOL'; shape: number[]; data: ArrayBufferView } {
  const shape = t.shape.length === 0 ? [1] : [...t.shape];
  const info = DTYPE_INFO[t.dtype];
  const out = info.hostArray(data.length, 'f32');
  out.set(data);
  return { dtype: info.safetensors === 'F16' ? 'F32' : info.safetensors, shape, data: out };
}
