// Moving tensors between host and GPU. A dtype's bytes and host array are the dtype table's
// (ir/dtypes.ts), its WGSL storage type codegen's (codegen/wgsl/dtypes.ts: bool is a u32 holding 0 or 1).

import { describeNode } from '../../codegen/index.ts';
import { type BindingLimits, formatBytes, tooBigError } from '../../codegen/split.ts';
import { storageType } from '../../codegen/wgsl/dtypes.ts';
import { DTYPE_INFO, bufferBytes } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import { f16Bits, f16Value } from '../../ir/f16.ts';
import type { Node } from '../../ir/graph.ts';
import type { HostData, HostTensor } from '../../ir/host.ts';
import { type TensorType, formatType, numel } from '../../ir/types.ts';
import type { KilnDevice } from './device.ts';

export { formatBytes } from '../../codegen/split.ts';

// GPUBufferUsage is a global only once Dawn's globals are installed (getGpu), so it is read on use.
function storageUsage(): number {
  return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
}

/** Bytes a tensor of this type occupies on the GPU, at least 4 (WebGPU bindings cannot be empty). */
export function gpuBytes(type: TensorType): number {
  return bufferBytes(type.dtype, numel(type.shape));
}

/** GPU bytes held by buffers kiln allocated (allocateFor, upload) and not yet released, and their most since reset. */
export interface GpuMemory {
  readonly currentBytes: number;
  readonly peakBytes: number;
}

const memory = { currentBytes: 0, peakBytes: 0 };
// Only buffers counted here are uncounted on release, so releasing a caller's buffer cannot skew the total.
const counted = new WeakSet<GPUBuffer>();

function count(buffer: GPUBuffer): GPUBuffer {
  counted.add(buffer);
  memory.currentBytes += buffer.size;
  memory.peakBytes = Math.max(memory.peakBytes, memory.currentBytes);
  return buffer;
}

/** kiln's GPU memory now and its high-water mark (buffers destroyed without releaseBuffer stay counted). */
export function gpuMemory(): GpuMemory {
  return { ...memory };
}

/** Starts a new high-water mark from what is allocated now: the benchmark's peak of one case. */
export function resetPeakGpuMemory(): void {
  memory.peakBytes = memory.currentBytes;
}

/** Destroys a buffer and takes it off kiln's count. */
export function releaseBuffer(buffer: GPUBuffer): void {
  if (counted.delete(buffer)) memory.currentBytes -= buffer.size;
  buffer.destroy();
}

/**
 * A storage buffer for a node's value. It may be bigger than one binding (the executor then binds it in
 * windows, codegen/split.ts), not bigger than maxBufferSize: past that, KilnError E009 at once, naming
 * the tensor, its size and the limit; an allocation the driver refuses -> E009 at the next check.
 */
export function allocateFor(kdev: KilnDevice, node: Node, label = `%${node.id}`): GPUBuffer {
  const size = checkBufferSize(kdev, node);
  return count(
    kdev.errors.scoped({ what: `allocating ${formatBytes(size)} for ${describeNode(node)}`, loc: node.loc }, () =>
      kdev.device.createBuffer({ size, usage: storageUsage(), label }),
    ),
  );
}

/** A node's GPU bytes; KILN_E009 naming it, its size and maxBufferSize when no buffer can hold it. */
export function checkBufferSize(kdev: KilnDevice, node: Node): number {
  const size = gpuBytes(node.type);
  if (size > kdev.limits.maxBufferSize) throw tooBigError(node, size, 'maxBufferSize', kdev.limits.maxBufferSize);
  return size;
}

/**
 * What one storage binding may see on this device: maxStorageBufferBindingSize, at offsets aligned to
 * minStorageBufferOffsetAlignment. KILN_MAX_STORAGE_BINDING (bytes) lowers the size, for tests of the
 * split kernels on small tensors (test/split.gpu.test.ts); it never raises it.
 */
export function bindingLimits(kdev: KilnDevice): BindingLimits {
  const lowered = typeof process !== 'undefined' ? Number(process.env?.KILN_MAX_STORAGE_BINDING) : NaN;
  const maxBytes = Math.min(kdev.limits.maxStorageBufferBindingSize, lowered > 0 ? lowered : Infinity);
  return { maxBytes, offsetAlignment: kdev.limits.minStorageBufferOffsetAlignment };
}

/** The typed array of each WGSL storage type (f16: its bit patterns, as Node 20 has no Float16Array). */
const STORAGE_ARRAYS = { f32: Float32Array, f16: Uint16Array, i32: Int32Array, u32: Uint32Array } as const;
type GpuWords = Float32Array | Uint16Array | Int32Array | Uint32Array;

/**
 * Host values as the GPU stores them (f64 narrowed to f32, bool widened to u32, f16 rounded to its bit
 * patterns). f16 data is padded to whole 4-byte words, as WebGPU writes them.
 */
export function toGpuWords(t: HostTensor): GpuWords {
  if (t.type.dtype === 'f16') {
    const bits = new Uint16Array(t.data.length + (t.data.length % 2));
    for (let i = 0; i < t.data.length; i++) bits[i] = f16Bits(t.data[i]);
    return bits;
  }
  const Words = STORAGE_ARRAYS[storageType(t.type.dtype)] as typeof Float32Array | typeof Int32Array | typeof Uint32Array;
  return t.data instanceof Words ? t.data : Words.from(t.data);
}

/** Writes a host tensor into a buffer (queued: it lands before the next submitted work). */
export function writeTensor(kdev: KilnDevice, buffer: GPUBuffer, t: HostTensor): void {
  const words = toGpuWords(t);
  if (words.length > 0) kdev.device.queue.writeBuffer(buffer, 0, words.buffer, words.byteOffset, words.byteLength);
}

/** A new GPU buffer holding a host tensor: upload parameters once, pass the buffer to every run. */
export function upload(kdev: KilnDevice, t: HostTensor, label = formatType(t.type)): GPUBuffer {
  const size = gpuBytes(t.type);
  if (size > kdev.limits.maxBufferSize) {
    throw new KilnError('KILN_E009', `a ${formatType(t.type)} tensor needs ${formatBytes(size)}, more than this GPU's maxBufferSize of ${formatBytes(kdev.limits.maxBufferSize)}`);
  }
  const buffer = kdev.errors.scoped({ what: `uploading ${label} (${formatBytes(size)})` }, () =>
    kdev.device.createBuffer({ size, usage: storageUsage(), label }),
  );
  writeTensor(kdev, buffer, t);
  return count(buffer);
}

/** Copies a buffer back into the dtype's host array (f32 and f16 -> Float32Array, i32 -> Int32Array, bool -> Uint8Array). Throws any GPU error pending first. */
export async function readback(kdev: KilnDevice, buffer: GPUBuffer, type: TensorType): Promise<HostData> {
  await kdev.errors.check();
  const n = numel(type.shape);
  const info = DTYPE_INFO[type.dtype];
  if (n === 0) return info.hostArray(0, 'f32');
  const size = bufferBytes(type.dtype, n);
  const { device } = kdev;
  const staging = kdev.errors.scoped({ what: `reading back a ${formatType(type)} tensor` }, () => {
    const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
    const encoder = device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, size);
    device.queue.submit([encoder.finish()]);
    return staging;
  });
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch (e) {
    await kdev.errors.check(); // the cause (device lost, bad copy) is the better error
    throw new KilnError('KILN_E008', `reading back a ${formatType(type)} tensor failed: ${(e as Error).message}`);
  }
  const words = staging.getMappedRange().slice(0);
  staging.unmap();
  staging.destroy();
  await kdev.errors.check();
  const stored = new STORAGE_ARRAYS[storageType(type.dtype)](words, 0, n);
  const host = info.hostArray(n, 'f32');
  if (host.constructor === stored.constructor) return stored as HostData;
  const decode = type.dtype === 'f16' ? f16Value : info.isFloat || info.isInt ? Number : (w: number) => Number(w !== 0); // bool: 0/1 bytes from its words
  for (let i = 0; i < n; i++) host[i] = decode(stored[i]);
  return host;
}
