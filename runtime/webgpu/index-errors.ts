// The index-error record on the GPU (its layout: codegen/index-errors.ts): a buffer the checking kernels
// write, copied into a mappable one behind them and read back as the KILN_E011 the CPU reference raises.

import { type Kernel, RECORD_WORDS, decodeIndexFaults } from '../../codegen/index.ts';
import { indexError } from '../../ir/bounds.ts';
import type { KilnError } from '../../ir/errors.ts';
import type { KilnDevice } from './device.ts';

/** A zeroed record with a slot for each checking kernel (slots as codegen numbered them). */
export function createIndexRecord(kdev: KilnDevice, checks: readonly Kernel[], label: string): GPUBuffer | null {
  if (checks.length === 0) return null;
  const slots = Math.max(...checks.map((k) => k.indexCheck!.slot)) + 1;
  return kdev.errors.scoped({ what: `allocating ${label}` }, () =>
    kdev.device.createBuffer({ size: slots * RECORD_WORDS * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label }),
  );
}

/** Queues a copy of the record on `encoder`, behind the kernels it follows; read it with readIndexRecord once submitted. */
export function copyIndexRecord(kdev: KilnDevice, encoder: GPUCommandEncoder, record: GPUBuffer): GPUBuffer {
  const staging = kdev.device.createBuffer({ size: record.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'kiln index errors readback' });
  encoder.copyBufferToBuffer(record, 0, staging, 0, record.size);
  return staging;
}

/**
 * The first of `checks` (in program order, as the CPU reference meets them) whose slot holds bad
 * indices, as E011 at its node's line; null when none does, or when the read fails (a lost device is
 * reported by the error watch).
 */
export async function readIndexRecord(staging: GPUBuffer, checks: readonly Kernel[]): Promise<KilnError | null> {
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch {
    staging.destroy();
    return null;
  }
  const words = new Uint32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  for (const kernel of checks) {
    const { range, slot, firstPosition = 0 } = kernel.indexCheck!;
    const faults = decodeIndexFaults(words, slot);
    if (faults) return indexError(range, { ...faults, first: faults.first + firstPosition }, kernel.node.loc);
  }
  return null;
}
