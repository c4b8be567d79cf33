// Runs a Program: computed nodes share storage buffers by liveness (aliases share their source's), leaves fed
// from the caller, every dispatch of a run in one command encoder and one submit.

import { type Kernel, type Program, describeNode } from '../../codegen/index.ts';
import { planBuffers } from '../../codegen/memory.ts';
import { type BindingWindow, type KernelPart, splitKernel } from '../../codegen/split.ts';
import { KilnError } from '../../ir/errors.ts';
import type { Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import { getOp } from '../../ir/registry.ts';
import { formatType, sameType } from '../../ir/types.ts';
import { allocateFor, bindingLimits, checkBufferSize, gpuBytes, releaseBuffer, writeTensor } from './buffers.ts';
import type { KilnDevice } from './device.ts';
import type { ErrorContext } from './errors.ts';
import { copyIndexRecord, createIndexRecord, readIndexRecord } from './index-errors.ts';
import { type GpuPipeline, pipelineFor } from './pipelines.ts';
import type { KernelTimer } from './timing.ts';

/** What feeds a leaf: a GPU buffer the caller keeps (cached parameters), or host data to upload. */
export type Feed = GPUBuffer | HostTensor;

/** One dispatch: a program kernel, or one window of a kernel split over tensors past the binding limit. */
interface Step {
  /** What is dispatched (for a split kernel, the window's). */
  kernel: Kernel;
  /** Where each tensor binding (inputs, then out) starts and ends in its buffer; absent: whole tensors. */
  windows?: readonly (BindingWindow | undefined)[];
  pipeline: GpuPipeline;
  paramsOffset: number;
  bindGroup: GPUBindGroup | null;
  boundTo: GPUBuffer[];
}

function isHostTensor(feed: Feed): feed is HostTensor {
  return (feed as HostTensor).type !== undefined && (feed as HostTensor).data !== undefined;
}

export class Executor {
  /** Buffers of computed nodes, owned by the executor and overwritten by each run. */
  private readonly owned = new Map<Node, GPUBuffer>();
  /** Upload buffers for leaves fed host data, reused across runs. */
  private readonly uploads = new Map<Node, GPUBuffer>();
  private fed = new Map<Node, GPUBuffer>();

  /** The kernels that check the indices they read, in program order, windows of split ones included (their record slots: codegen/index-errors.ts). */
  readonly indexChecks: readonly Kernel[];
  /** Where they report bad indices; cleared at the start of every run. */
  private readonly indexRecord: GPUBuffer | null;

  private constructor(
    readonly kdev: KilnDevice,
    readonly program: Program,
    private readonly steps: Step[],
    private readonly paramsBuffer: GPUBuffer,
  ) {
    this.indexChecks = steps.map((s) => s.kernel).filter((k) => k.indexCheck);
    this.indexRecord = createIndexRecord(kdev, this.indexChecks, 'kiln index errors');
  }

  /** Compiles every pipeline (a rejected shader throws E010 here) and allocates the buffers. */
  static async create(kdev: KilnDevice, program: Program): Promise<Executor> {
    kdev.errors.throwIfFailed();
    // Values share buffers when their lifetimes do not overlap (codegen/memory.ts); one past maxBufferSize is E009 before anything is made.
    const plan = planBuffers(program);
    for (const node of plan.largest) checkBufferSize(kdev, node);
    // A kernel over a tensor past one binding runs in windows of rows (codegen/split.ts), or fails with E009 here.
    const binding = bindingLimits(kdev);
    let errorSlots = Math.max(-1, ...program.kernels.map((k) => k.indexCheck?.slot ?? -1)) + 1; // windows of checking kernels take slots after the program's
    const dispatches: KernelPart[] = program.kernels.flatMap((kernel) => splitKernel(kernel, binding, kdev.limits, () => errorSlots++) ?? [{ kernel }]);
    const pipelines = await Promise.all(dispatches.map((d) => pipelineFor(kdev, d.kernel)));
    // All kernels' params share one uniform buffer, each at an aligned offset, written once.
    const align = kdev.limits.minUniformBufferOffsetAlignment;
    let offset = 0;
    const steps = dispatches.map(({ kernel, windows }, i) => {
      const step: Step = { kernel, windows, pipeline: pipelines[i], paramsOffset: offset, bindGroup: null, boundTo: [] };
      offset += Math.ceil(kernel.params.byteLength / align) * align;
      return step;
    });
    const paramsBuffer = kdev.errors.scoped({ what: 'allocating kernel params' }, () =>
      kdev.device.createBuffer({ size: Math.max(offset, 16), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'kiln params' }),
    );
    for (const step of steps) kdev.device.queue.writeBuffer(paramsBuffer, step.paramsOffset, step.kernel.params.buffer, step.kernel.params.byteOffset, step.kernel.params.byteLength);
    const executor = new Executor(kdev, program, steps, paramsBuffer);
    const slots = plan.largest.map((node, i) => allocateFor(kdev, node, `kiln buffer ${i} (%${node.id} and others)`));
    for (const [node, slot] of plan.slotOf) executor.owned.set(node, slots[slot]);
    return executor;
  }

  /**
   * Queues one run: uploads host feeds, records every dispatch, submits once. Returns the graph's
   * outputs by name. Errors of this run surface at the next `readback` (or `kdev.errors.check()`).
   * The buffers are the executor's: read them back before the next run overwrites them.
   * With a timer (kiln profile), each kernel gets a compute pass of its own, timed by the timer.
   */
  run(feeds: ReadonlyMap<Node, Feed>, timer?: KernelTimer): Map<string, GPUBuffer> {
    const { kdev, program } = this;
    kdev.errors.throwIfFailed();
    this.fed = new Map();
    for (const node of program.graph.nodes) {
      if (getOp(node.op, node.loc).leaf && program.storageOf(node) === node) this.fed.set(node, this.feedBuffer(node, feeds.get(node)));
    }
    const context: ErrorContext = {
      what: `running ${program.kernels.length} kernels`,
      // Dawn names the pipeline or bind group at fault by its label: map it back to the node.
      refine: (message) => {
        const step = this.steps.find((s) => message.includes(`"${s.kernel.label}"`));
        return step ? { what: `running the kernel for ${describeNode(step.kernel.node)}`, loc: step.kernel.node.loc } : undefined;
      },
    };
    kdev.errors.scoped(context, () => {
      const encoder = kdev.device.createCommandEncoder({ label: 'kiln run' });
      if (this.indexRecord) encoder.clearBuffer(this.indexRecord);
      const shared = timer ? null : encoder.beginComputePass({ label: 'kiln run' });
      for (const step of this.steps) {
        const [x, y, z] = step.kernel.workgroups;
        if (x === 0) continue;
        const { kernel } = step;
        const pass = shared ?? encoder.beginComputePass({ label: kernel.label, timestampWrites: timer?.timestampWrites(kernel) });
        pass.setPipeline(step.pipeline.pipeline);
        pass.setBindGroup(0, this.bindGroupFor(step));
        pass.dispatchWorkgroups(x, y, z);
        if (!shared) pass.end();
      }
      shared?.end();
      kdev.device.queue.submit([encoder.finish()]);
    });
    return new Map(program.graph.outputs.map((o) => [o.name, this.bufferOf(o.node)]));
  }

  /**
   * Reads back the index checks of the runs queued so far (call it right after run(), before the next):
   * E011 for the first kernel that met an index outside its range, else null. Without such kernels it
   * reads nothing.
   */
  readIndexErrors(): Promise<KilnError | null> {
    if (!this.indexRecord) return Promise.resolve(null);
    const encoder = this.kdev.device.createCommandEncoder({ label: 'kiln index errors' });
    const staging = copyIndexRecord(this.kdev, encoder, this.indexRecord);
    this.kdev.device.queue.submit([encoder.finish()]);
    return readIndexRecord(staging, this.indexChecks);
  }

  /** The buffer holding a node's value after a run (alias chains resolved). */
  bufferOf(node: Node): GPUBuffer {
    const storage = this.program.storageOf(node);
    const buffer = this.owned.get(storage) ?? this.fed.get(storage);
    if (!buffer) throw new KilnError('KILN_E011', `${describeNode(node)} has no buffer in this program`, node.loc);
    return buffer;
  }

  /** Frees the executor's buffers; buffers the caller fed are left alone. */
  destroy(): void {
    for (const b of new Set([...this.owned.values(), ...this.uploads.values()])) releaseBuffer(b);
    this.paramsBuffer.destroy();
    this.indexRecord?.destroy();
    this.owned.clear();
    this.uploads.clear();
  }

  private feedBuffer(node: Node, feed: Feed | undefined): GPUBuffer {
    const name = `${node.op} "${String(node.attrs.name)}" (${formatType(node.type)})`;
    if (!feed) throw new KilnError('KILN_E014', `no value was given for ${name}`, node.loc);
    if (!isHostTensor(feed)) {
      if (feed.size < gpuBytes(node.type)) throw new KilnError('KILN_E014', `the buffer given for ${name} holds ${feed.size} bytes, it needs ${gpuBytes(node.type)}`, node.loc);
      return feed;
    }
    if (!sameType(feed.type, node.type)) throw new KilnError('KILN_E014', `${name} was given a ${formatType(feed.type)} tensor`, node.loc);
    let buffer = this.uploads.get(node);
    if (!buffer) this.uploads.set(node, (buffer = allocateFor(this.kdev, node, `%${node.id} ${node.op} ${String(node.attrs.name)}`)));
    writeTensor(this.kdev, buffer, feed);
    return buffer;
  }

  /** Bind groups are made once and remade only when a fed buffer changes identity. */
  private bindGroupFor(step: Step): GPUBindGroup {
    const { kernel } = step;
    const tensors = [...kernel.inputs, kernel.node];
    const buffers = tensors.map((x) => this.bufferOf(x));
    if (step.bindGroup && buffers.every((b, i) => b === step.boundTo[i])) return step.bindGroup;
    const entries = kernel.bindings.map((b): GPUBindGroupEntry => {
      if (b.kind === 'uniform') return { binding: b.binding, resource: { buffer: this.paramsBuffer, offset: step.paramsOffset, size: kernel.params.byteLength } };
      if (b.kind === 'index_errors') return { binding: b.binding, resource: { buffer: this.indexRecord! } };
      // Each binding sees its tensor's bytes (a shared buffer may be bigger than one binding), or its window of them.
      const i = b.binding - 1;
      const window = step.windows?.[i] ?? { offset: 0, size: gpuBytes(tensors[i].type) };
      return { binding: b.binding, resource: { buffer: buffers[i], ...window } };
    });
    step.bindGroup = this.kdev.errors.scoped({ what: `binding buffers for ${describeNode(kernel.node)}`, loc: kernel.node.loc }, () =>
      this.kdev.device.createBindGroup({ layout: step.pipeline.layout, entries, label: kernel.label }),
    );
    step.boundTo = buffers;
    return step.bindGroup;
  }
}
