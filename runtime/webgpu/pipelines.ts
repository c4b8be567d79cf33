// Compute pipelines, cached by shader text (less its header comment): kernels whose text is equal (same op, rank, constants;
// any shapes, since shapes live in the params uniform) share one pipeline.

import { type Kernel, describeNode } from '../../codegen/index.ts';
import { ENABLE_F16 } from '../../codegen/wgsl/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import type { KilnDevice } from './device.ts';

export interface GpuPipeline {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

const caches = new WeakMap<GPUDevice, Map<string, Promise<GpuPipeline>>>();
/** Pipelines already made, for the synchronous path (eager mode) to reuse. */
const ready = new WeakMap<GPUDevice, Map<string, GpuPipeline>>();

function cachesOf(device: GPUDevice): { pending: Map<string, Promise<GpuPipeline>>; made: Map<string, GpuPipeline> } {
  let pending = caches.get(device);
  if (!pending) caches.set(device, (pending = new Map()));
  let made = ready.get(device);
  if (!made) ready.set(device, (made = new Map()));
  return { pending, made };
}

/** The bind group layout, from the bindings codegen reflected out of the shader text. */
function layoutEntries(kernel: Kernel): GPUBindGroupLayoutEntry[] {
  return kernel.bindings.map((b) => ({
    binding: b.binding,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: b.kind === 'uniform' ? 'uniform' : b.kind === 'read' ? 'read-only-storage' : 'storage' },
  }));
}

/**
 * The pipeline for a kernel, compiled once per shader text. A shader WebGPU rejects becomes a
 * KilnError E010 naming the node and the user's source line, with the compiler's messages.
 */
export function pipelineFor(kdev: KilnDevice, kernel: Kernel): Promise<GpuPipeline> {
  requireFeatures(kdev, kernel);
  const { pending, made } = cachesOf(kdev.device);
  const hit = pending.get(kernel.key);
  if (hit) return hit;
  const promise = compile(kdev, kernel);
  pending.set(kernel.key, promise);
  promise.then((p) => made.set(kernel.key, p), () => pending.delete(kernel.key));
  return promise;
}

/**
 * The same, made synchronously (eager mode cannot await): a rejected shader is reported as E010,
 * naming the node, at the next check or readback.
 */
export function pipelineForSync(kdev: KilnDevice, kernel: Kernel): GpuPipeline {
  requireFeatures(kdev, kernel);
  const { pending, made } = cachesOf(kdev.device);
  const hit = made.get(kernel.key);
  if (hit) return hit;
  const { device, errors } = kdev;
  const pipeline = errors.scoped({ what: `compiling the kernel for ${describeNode(kernel.node)}`, loc: kernel.node.loc }, () => {
    const module = device.createShaderModule({ code: kernel.code, label: kernel.label });
    const layout = device.createBindGroupLayout({ entries: layoutEntries(kernel), label: kernel.label });
    const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout], label: kernel.label });
    return { pipeline: device.createComputePipeline({ label: kernel.label, layout: pipelineLayout, compute: { module, entryPoint: 'main' } }), layout };
  });
  made.set(kernel.key, pipeline);
  pending.set(kernel.key, Promise.resolve(pipeline));
  return pipeline;
}

/** An f16 kernel on a device without shader-f16: KILN_E021 naming the node's line, before WebGPU sees it (no silent f32 fallback). */
function requireFeatures(kdev: KilnDevice, kernel: Kernel): void {
  if (kdev.f16 || !kernel.code.includes(ENABLE_F16)) return;
  throw new KilnError('KILN_E021', `${describeNode(kernel.node)} computes in f16, but this WebGPU device (${kdev.description}) has no shader-f16; run in f32 (--dtype float32, no autocast, no .half()) or on a GPU that offers shader-f16`, kernel.node.loc);
}

async function compile(kdev: KilnDevice, kernel: Kernel): Promise<GpuPipeline> {
  const { device, errors } = kdev;
  const context = { what: `compiling the kernel for ${describeNode(kernel.node)}`, loc: kernel.node.loc };
  // Scopes awaited here, not left to the ErrorWatch: the failure belongs to this call alone.
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code: kernel.code, label: kernel.label });
  const layout = device.createBindGroupLayout({ entries: layoutEntries(kernel), label: kernel.label });
  const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout], label: kernel.label });
  const validation = device.popErrorScope();
  const memory = device.popErrorScope();
  let failure: { code: 'KILN_E009' | 'KILN_E010'; message: string } | null = null;
  let pipeline: GPUComputePipeline | null = null;
  try {
    pipeline = await device.createComputePipelineAsync({ label: kernel.label, layout: pipelineLayout, compute: { module, entryPoint: 'main' } });
  } catch (e) {
    failure = { code: 'KILN_E010', message: e instanceof Error ? e.message : String(e) };
  }
  const [invalid, oom] = await Promise.all([validation, memory]);
  if (oom) failure = { code: 'KILN_E009', message: oom.message };
  if (invalid || failure) {
    // The shader compiler's messages say what is wrong and on which line of the generated text.
    const info = await module.getCompilationInfo();
    const messages = info.messages.filter((m) => m.type === 'error').map((m) => `line ${m.lineNum}: ${m.message}`);
    const message = messages.length ? messages.join('; ') : (invalid?.message ?? failure?.message ?? '');
    throw errors.wrap(failure?.code ?? 'KILN_E010', context, new Error(message));
  }
  return { pipeline: pipeline as GPUComputePipeline, layout };
}
