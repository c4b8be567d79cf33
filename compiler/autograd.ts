// Gradients of a model's loss with respect to its parameters: trace forward(), differentiate the
// graph (ir/autograd.ts), run it on a backend (cpu by default, or webgpu). Eager `loss.backward()`
// lives in frontend/tape.ts; gradsOf() reads what it left in `.grad`.

import { differentiate } from '../ir/autograd.ts';
import { KilnError } from '../ir/errors.ts';
import type { HostTensor } from '../ir/host.ts';
import { type AutocastDType, autocastGraph } from '../passes/autocast.ts';
import { type BackendName, loadBackend } from './backends.ts';
import type { Module } from './frontend/module.ts';
import { leafFeeder, stateTensors } from './leaves.ts';
import { traceModule } from './tracer.ts';

/**
 * The gradient of forward()'s `loss` output (or its only output) for every parameter, by state-dict name.
 * Tensor arguments must live on the host; the model's parameters and buffers are read as they are now.
 */
export async function gradients(
  model: Module & { forward: (...args: never[]) => unknown },
  forwardArgs: readonly unknown[],
  options: { backend?: BackendName; autocast?: AutocastDType } = {},
): Promise<Map<string, HostTensor>> {
  return (await lossAndGradients(model, forwardArgs, options)).grads;
}

/** The loss's value and its gradients, from one forward and backward run (what a training step needs). */
export async function lossAndGradients(
  model: Module & { forward: (...args: never[]) => unknown },
  forwardArgs: readonly unknown[],
  options: { backend?: BackendName; autocast?: AutocastDType } = {},
): Promise<{ loss: number; grads: Map<string, HostTensor> }> {
  const trace = traceModule(model, forwardArgs);
  // With autocast, the forward's casts are differentiated too: each gradient is cast back to its value's dtype.
  const graph = options.autocast ? autocastGraph(trace.graph, options.autocast) : trace.graph;
  const lossOutput = graph.outputs.find((o) => o.name === 'loss') ?? (graph.outputs.length === 1 ? graph.outputs[0] : undefined);
  if (!lossOutput) {
    throw new KilnError('KILN_E011', `gradients() needs forward() to return a "loss" tensor (or a single tensor); it returned ${graph.outputs.map((o) => o.name).join(', ')}`);
  }
  if (lossOutput.node.type.shape.length !== 0) throw new KilnError('KILN_E011', 'gradients() needs a 0-d loss; reduce it with .mean() or .sum() first');
  const params = graph.nodesOf('param');
  const withGrads = differentiate(graph, lossOutput.node, params);

  const leaf = leafFeeder(withGrads, stateTensors(model), trace.argNames, forwardArgs);
  const backend = await loadBackend(options.backend ?? 'cpu');
  const outputs = await (await backend.prepare(withGrads))(leaf);
  const grads = new Map<string, HostTensor>();
  for (const p of params) {
    const name = String(p.attrs.name);
    const t = outputs.get(`grad.${name}`)!;
    grads.set(name, t.readHost() ?? { type: t.type, data: await t.data() });
  }
  return { loss: (await outputs.get(lossOutput.name)!.data())[0], grads };
}

/**
 * Every parameter's `.grad` (from eager `loss.backward()`), read to the host, by state-dict name: what
 * AdamW.step takes (`opt.step(await gradsOf(model))`). Parameters without a gradient are left out.
 */
export async function gradsOf(model: Module): Promise<Map<string, HostTensor>> {
  const grads = new Map<string, HostTensor>();
  for (const [name, p] of model.namedParameters()) {
    if (p.grad) grads.set(name, p.grad.readHost() ?? { type: p.grad.type, data: await p.grad.data() });
  }
  return grads;
}
