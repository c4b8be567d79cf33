// The webgpu backend: compiled graphs run as generated WGSL through runtime/webgpu's Executor, eager
// ops as one-node programs on the same kernels. Tensors it returns stay on the GPU until read.

import { type Program, lowerGraph, lowerNode } from '../codegen/index.ts';
import { checkIndices } from '../ir/bounds.ts';
import { type Graph, type Node, isNode } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { log } from '../ir/log.ts';
import type { TensorType } from '../ir/types.ts';
import { Executor, type Feed, type KilnDevice, getDevice, gpuBytes, readback, runKernel, upload } from '../runtime/webgpu/index.ts';
import { autotuneFromEnv, autotuneGraph } from '../runtime/webgpu/autotune.ts';
import { type ExecutionBackend, type PrepareOptions, type RunOptions, type Runner, eagerInputIndex, writeBackParts } from './backend.ts';
import type { EagerBackend } from './frontend/dispatch.ts';
import { IndexChecks } from './index-checks.ts';
import { leafKind } from './leaves.ts';
import { type DeviceValue, Tensor } from './frontend/tensor.ts';

/** A tensor's GPU buffer. Freed when the tensor is garbage-collected, or at once with dispose(). */
export class GpuValue implements DeviceValue {
  readonly backend = 'webgpu';
  constructor(
    readonly kdev: KilnDevice,
    readonly buffer: GPUBuffer,
    readonly type: TensorType,
  ) {
    released.register(this, buffer);
  }
  read(): Promise<Float32Array | Int32Array | Uint8Array> {
    return readback(this.kdev, this.buffer, this.type) as Promise<Float32Array | Int32Array | Uint8Array>;
  }
}

const released = new FinalizationRegistry<GPUBuffer>((buffer) => buffer.destroy());

/** The tensor's buffer on this device; host-only tensors (parameters, inputs) are uploaded once and kept. */
function deviceBuffer(kdev: KilnDevice, t: Tensor, label: string): GPUBuffer {
  if (t.device instanceof GpuValue && t.device.kdev === kdev) return t.device.buffer;
  const host = t.readHost();
  if (!host) throw new Error(`${label} has no data on the host or this device`);
  const value = new GpuValue(kdev, upload(kdev, host, label), t.type);
  t.cacheCopy({ device: value });
  return value.buffer;
}

/** Copies an executor-owned output buffer into a fresh one, so the next run cannot overwrite it. */
function detach(kdev: KilnDevice, encoder: GPUCommandEncoder, src: GPUBuffer, type: TensorType): Tensor {
  const buffer = kdev.device.createBuffer({ size: src.size, usage: src.usage, label: 'kiln output' });
  encoder.copyBufferToBuffer(src, 0, buffer, 0, src.size);
  return new Tensor(type, { device: new GpuValue(kdev, buffer, type) });
}

/**
 * Runs, then copies each output out of the executor's buffers: into a fresh buffer, or, for outputs
 * in `writeBack`, into that tensor's own buffer (a parameter a training step updates in place; the
 * copy is queued after every kernel that read the old value). Such tensors' host copies go stale and
 * are dropped.
 */
function runDetached(kdev: KilnDevice, exec: Executor, feeds: Map<Node, Feed>, outputs: readonly { name: string; node: Node }[], writeBack?: RunOptions['writeBack']): Map<string, Tensor> {
  const buffers = exec.run(feeds);
  const encoder = kdev.device.createCommandEncoder({ label: 'kiln outputs' });
  const result = new Map<string, Tensor>();
  for (const o of outputs) {
    const src = buffers.get(o.name)!;
    const target = writeBack?.get(o.name);
    if (!target) {
      result.set(o.name, detach(kdev, encoder, src, o.node.type));
      continue;
    }
    // Stacked parts lie one after another in the output: part i starts i * (its bytes) in.
    for (const [i, t] of writeBackParts(o.name, o.node.type, target).entries()) {
      const bytes = gpuBytes(t.type);
      encoder.copyBufferToBuffer(src, i * bytes, deviceBuffer(kdev, t, o.name), 0, bytes);
      t.markWritten('device');
    }
  }
  kdev.device.queue.submit([encoder.finish()]);
  return result;
}

async function prepare(graph: Graph, { checkBounds = true, autotune = autotuneFromEnv() }: PrepareOptions = {}): Promise<Runner> {
  const build = async (kdev: KilnDevice) => {
    // With autotune, kernels with alternatives are measured first; the tuned limits carry the picks.
    const limits = autotune ? await autotuneGraph(kdev, graph) : kdev.limits;
    const program = lowerGraph(graph, limits, { checkBounds });
    logKernels(program);
    return { kdev, exec: await Executor.create(kdev, program), indexChecks: IndexChecks.of(program) };
  };
  let target = await build(await getDevice());
  const leaves = graph.nodes.filter((n) => getOp(n.op).leaf);
  return async (leaf, options) => {
    // The device was lost: rebuild on the new one (weights upload again on use), then report the loss
    // (E008) once, so it never passes silently; the call after that runs on the new device.
    const current = await getDevice();
    if (current !== target.kdev) {
      const lost = target.kdev;
      target = await build(current);
      lost.errors.throwIfFailed();
    }
    const { kdev, exec, indexChecks } = target;
    // Bad indices fed from the host raise E011 here, before any work; those only on the GPU, after the run.
    const readIndexErrors = indexChecks.beforeRun(leaf);
    const feeds = new Map<Node, Feed>();
    for (const node of leaves) {
      const t = leaf(node);
      // Inputs and the rng change every call: the executor writes them into its own buffer. Weights stay uploaded.
      feeds.set(node, leafKind(node).fedPerCall && t.readHost() && !(t.device instanceof GpuValue) ? t.readHost()! : deviceBuffer(kdev, t, `${node.op} ${String(node.attrs.name)}`));
    }
    const outputs = runDetached(kdev, exec, feeds, graph.outputs, options?.writeBack);
    const badIndices = readIndexErrors ? await exec.readIndexErrors() : null;
    if (badIndices) throw badIndices;
    return outputs;
  };
}

/** One kernels line per kernel: what it computes, its grid, what it reads, and which pipeline it shares. */
function logKernels(program: Program): void {
  const pipelines = new Map<string, number>();
  for (const k of program.kernels) {
    if (!pipelines.has(k.key)) pipelines.set(k.key, pipelines.size);
    log('kernels', k.label, { workgroups: k.workgroups.join('x'), reads: k.inputs.map((x) => `%${x.id}`).join(',') || 'none', pipeline: pipelines.get(k.key) });
  }
}

// Eager: each op runs its own kernel at once (pipelines are cached by shader text); its output is a new buffer.
let eagerDevice: KilnDevice | null = null;

const eager: EagerBackend = {
  name: 'webgpu',
  run(node, inputs) {
    const kdev = eagerDevice;
    if (!kdev) throw new Error('the webgpu eager backend runs after useBackend("webgpu")');
    // Indices on the host are checked there, at once, as the cpu backend does; indices only on the GPU
    // by the kernel, which reports them at the next read (runtime/webgpu/eager.ts).
    const range = getOp(node.op).indices?.(node.inputs.map((x) => (isNode(x) ? x.type : x)), node.attrs);
    const ids = range && inputs[eagerInputIndex(node.inputs[range.operand] as Node)].readHost();
    if (range && ids) checkIndices(ids.data, range, node.loc);
    const kernel = lowerNode(node, kdev.limits, { checkBounds: !ids });
    if (!kernel) throw new Error(`${node.op} has no kernel to run eagerly`);
    // The node's tensor operands are the eager graph's input leaves, in operand order.
    const buffers = kernel.inputs.map((leaf) => deviceBuffer(kdev, inputs[eagerInputIndex(leaf)], `input of ${node.op}`));
    return new Tensor(node.type, { device: new GpuValue(kdev, runKernel(kdev, kernel, buffers), node.type) });
  },
};

/** Opens the device (compiler/backends.ts loads this module and calls it on first use of `webgpu`). */
export const webgpuBackend = async (): Promise<ExecutionBackend> => {
  eagerDevice = await getDevice();
  return { name: 'webgpu', prepare, eager };
};
