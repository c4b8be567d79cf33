// Eager mode: one op at a time on buffers the caller holds. Each call records one dispatch and
// submits it at once; errors surface at the next readback, as for a whole Program. That includes an
// index outside its range met by a kernel that checks indices: its record is read back behind it.

import { type Kernel, describeNode } from '../../codegen/index.ts';
import { allocateFor } from './buffers.ts';
import { copyIndexRecord, createIndexRecord, readIndexRecord } from './index-errors.ts';
import type { KilnDevice } from './device.ts';
import { pipelineForSync } from './pipelines.ts';
import type { KernelTimer } from './timing.ts';

/** While set (kiln profile), every eager kernel is timed by it. */
let eagerTimer: KernelTimer | null = null;

/** Times every eager kernel from now on with `timer`, until called with null. */
export function timeEagerKernels(timer: KernelTimer | null): void {
  eagerTimer = timer;
}

/**
 * Runs one kernel (from lowerNode) on `inputs`, the buffers of kernel.inputs in order. Returns the
 * output buffer: `out` if given, else a new one the caller owns (destroy it when done). Bad indices
 * (a kernel with indexCheck) are E011 at the next readback or `kdev.errors.check()`.
 */
export function runKernel(kdev: KilnDevice, kernel: Kernel, inputs: readonly GPUBuffer[], out?: GPUBuffer): GPUBuffer {
  const { device, errors } = kdev;
  errors.throwIfFailed();
  if (inputs.length !== kernel.inputs.length) throw new Error(`${kernel.label} reads ${kernel.inputs.length} buffers, got ${inputs.length}`);
  const { pipeline, layout } = pipelineForSync(kdev, kernel);
  const output = out ?? allocateFor(kdev, kernel.node, kernel.label);
  errors.scoped({ what: `running the kernel for ${describeNode(kernel.node)}`, loc: kernel.node.loc }, () => {
    const params = device.createBuffer({ size: kernel.params.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: kernel.label });
    device.queue.writeBuffer(params, 0, kernel.params.buffer, kernel.params.byteOffset, kernel.params.byteLength);
    const buffers = [...inputs, output];
    const record = createIndexRecord(kdev, kernel.indexCheck ? [kernel] : [], kernel.label);
    const entries = kernel.bindings.map((b) => ({ binding: b.binding, resource: { buffer: b.kind === 'uniform' ? params : b.kind === 'index_errors' ? record! : buffers[b.binding - 1] } }));
    const bindGroup = device.createBindGroup({ layout, entries, label: kernel.label });
    const encoder = device.createCommandEncoder({ label: kernel.label });
    const [x, y, z] = kernel.workgroups;
    if (x > 0) {
      const pass = encoder.beginComputePass({ label: kernel.label, timestampWrites: eagerTimer?.timestampWrites(kernel) });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
      pass.end();
    }
    const staging = record && copyIndexRecord(kdev, encoder, record);
    device.queue.submit([encoder.finish()]);
    params.destroy(); // freed once the submitted work is done
    record?.destroy();
    if (staging) errors.watch(readIndexRecord(staging, [kernel]));
  });
  return output;
}
