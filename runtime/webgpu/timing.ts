// Time per kernel, for `kiln profile`. With the adapter's timestamp-query feature, the runtime gives
// each kernel its own compute pass that writes a GPU timestamp at its start and end (Executor.run and
// runKernel take a KernelTimer for that). Without it, the kernels a run dispatched are replayed one
// by one, each submitted alone and timed by the wall clock until the queue reports it done.

import type { Kernel } from '../../codegen/index.ts';
import { formatType } from '../../ir/types.ts';
import { allocateFor } from './buffers.ts';
import type { KilnDevice } from './device.ts';
import { pipelineFor } from './pipelines.ts';

export type Clock = 'timestamp-query' | 'wall-clock';

export interface KernelTime {
  readonly kernel: Kernel;
  readonly ns: number;
}

// WebGPU caps a query set at 4096 queries: two per kernel, so 2048 kernels a set; more sets as needed.
const QUERIES_PER_SET = 4096;

interface QueryChunk {
  readonly querySet: GPUQuerySet;
  /** QUERY_RESOLVE target, then copied to `staging` to be mapped. */
  readonly resolved: GPUBuffer;
  readonly staging: GPUBuffer;
}

export class KernelTimer {
  readonly clock: Clock;
  /** The kernels recorded since the last collect(), in dispatch order. */
  private kernels: Kernel[] = [];
  private readonly chunks: QueryChunk[] = [];
  /** Scratch buffers for wall-clock replays, kept across collects, by what the kernel computes (eager mode lowers anew each call). */
  private readonly scratch = new Map<string, { bindGroup: GPUBindGroup; pipeline: GPUComputePipeline; buffers: GPUBuffer[] }>();

  /** Timestamps when the device has them; `clock` forces the wall clock (or asks for timestamps, which must exist). */
  constructor(
    readonly kdev: KilnDevice,
    clock?: Clock,
  ) {
    const stamps = kdev.device.features.has('timestamp-query');
    if (clock === 'timestamp-query' && !stamps) throw new Error('this device was opened without the timestamp-query feature');
    this.clock = clock ?? (stamps ? 'timestamp-query' : 'wall-clock');
  }

  /**
   * Records a kernel about to be dispatched in a pass of its own; returns the timestampWrites that
   * pass must carry (none with the wall clock, whose kernels are replayed by collect()).
   */
  timestampWrites(kernel: Kernel): GPUComputePassTimestampWrites | undefined {
    const index = this.kernels.push(kernel) - 1;
    if (this.clock === 'wall-clock') return undefined;
    const chunk = this.chunkFor(index);
    const slot = (index * 2) % QUERIES_PER_SET;
    return { querySet: chunk.querySet, beginningOfPassWriteIndex: slot, endOfPassWriteIndex: slot + 1 };
  }

  /** The time of every kernel recorded since the last call, in dispatch order; starts the next run afresh. */
  async collect(): Promise<KernelTime[]> {
    const kernels = this.kernels;
    this.kernels = [];
    const ns = this.clock === 'timestamp-query' ? await this.readTimestamps(kernels.length) : await this.replay(kernels);
    return kernels.map((kernel, i) => ({ kernel, ns: ns[i] }));
  }

  destroy(): void {
    for (const c of this.chunks) [c.querySet, c.resolved, c.staging].forEach((x) => x.destroy());
    for (const s of this.scratch.values()) s.buffers.forEach((b) => b.destroy());
    this.chunks.length = 0;
    this.scratch.clear();
  }

  private chunkFor(index: number): QueryChunk {
    const n = Math.floor((index * 2) / QUERIES_PER_SET);
    const { device } = this.kdev;
    while (this.chunks.length <= n) {
      const size = QUERIES_PER_SET * 8;
      this.chunks.push({
        querySet: device.createQuerySet({ type: 'timestamp', count: QUERIES_PER_SET, label: 'kiln profile' }),
        resolved: device.createBuffer({ size, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'kiln profile' }),
        staging: device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'kiln profile' }),
      });
    }
    return this.chunks[n];
  }

  /** Resolves the written timestamps and reads them back: end minus start of each pass, in ns. */
  private async readTimestamps(count: number): Promise<number[]> {
    const { device } = this.kdev;
    const used = this.chunks.slice(0, Math.ceil((count * 2) / QUERIES_PER_SET));
    const encoder = device.createCommandEncoder({ label: 'kiln profile' });
    used.forEach((c, i) => {
      const queries = Math.min(QUERIES_PER_SET, count * 2 - i * QUERIES_PER_SET);
      encoder.resolveQuerySet(c.querySet, 0, queries, c.resolved, 0);
      encoder.copyBufferToBuffer(c.resolved, 0, c.staging, 0, queries * 8);
    });
    device.queue.submit([encoder.finish()]);
    const ns: number[] = [];
    for (const c of used) {
      await c.staging.mapAsync(GPUMapMode.READ);
      const ticks = new BigUint64Array(c.staging.getMappedRange().slice(0));
      c.staging.unmap();
      for (let q = 0; q + 1 < ticks.length && ns.length < count; q += 2) {
        // A pass whose end reads before its start (a clock reset) counts as 0, not as a huge number.
        ns.push(ticks[q + 1] > ticks[q] ? Number(ticks[q + 1] - ticks[q]) : 0);
      }
    }
    await this.kdev.errors.check();
    return ns;
  }

  /** Wall clock: each kernel again, alone, on scratch buffers of its shapes, from submit to done. */
  private async replay(kernels: readonly Kernel[]): Promise<number[]> {
    const { device } = this.kdev;
    await device.queue.onSubmittedWorkDone(); // the run being profiled is not counted against its first kernel
    const ns: number[] = [];
    for (const kernel of kernels) {
      const { pipeline, bindGroup } = await this.scratchFor(kernel);
      const encoder = device.createCommandEncoder({ label: kernel.label });
      const pass = encoder.beginComputePass({ label: kernel.label });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(...kernel.workgroups);
      pass.end();
      const commands = encoder.finish();
      const start = performance.now();
      device.queue.submit([commands]);
      await device.queue.onSubmittedWorkDone();
      ns.push((performance.now() - start) * 1e6);
    }
    await this.kdev.errors.check();
    return ns;
  }

  private async scratchFor(kernel: Kernel): Promise<{ pipeline: GPUComputePipeline; bindGroup: GPUBindGroup }> {
    const key = [kernel.key, ...kernel.params, ...[...kernel.inputs, kernel.node].map((n) => formatType(n.type))].join('|');
    const known = this.scratch.get(key);
    if (known) return known;
    const { device } = this.kdev;
    const { pipeline, layout } = await pipelineFor(this.kdev, kernel);
    const params = device.createBuffer({ size: kernel.params.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: kernel.label });
    device.queue.writeBuffer(params, 0, kernel.params.buffer, kernel.params.byteOffset, kernel.params.byteLength);
    const storage = [...kernel.inputs, kernel.node].map((node) => allocateFor(this.kdev, node, kernel.label));
    const entries = kernel.bindings.map((b) => ({ binding: b.binding, resource: { buffer: b.kind === 'uniform' ? params : storage[b.binding - 1] } }));
    const made = { pipeline, bindGroup: device.createBindGroup({ layout, entries, label: kernel.label }), buffers: [params, ...storage] };
    this.scratch.set(key, made);
    return made;
  }
}
