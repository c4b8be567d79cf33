// The generator's KV caches on WebGPU: zeroed device buffers it owns, and the rows of each step copied
// into them at a position's offset (one copyBufferToBuffer per layer and tensor, or per batch row where a
// decode step's rows are columns of c_attn's output, queued after the step's kernels, all in one submit). Loaded by compiler/generate.ts only when it runs on `webgpu`.

import { DTYPE_INFO } from '../ir/dtypes.ts';
import { type TensorType, formatType } from '../ir/types.ts';
import { getDevice, gpuBytes } from '../runtime/webgpu/index.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { Tensor } from './frontend/tensor.ts';
import type { CacheStorage, CacheWrite } from './generate.ts';
import { GpuValue } from './webgpu.ts';

export async function gpuCacheStorage(): Promise<CacheStorage & { limits: KernelLimits }> {
  const kdev = await getDevice();
  return {
    limits: kdev.limits,
    async zeros(type: TensorType, label: string) {
      // WebGPU zero-fills new buffers.
      const buffer = kdev.device.createBuffer({ size: gpuBytes(type), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label });
      return new Tensor(type, { device: new GpuValue(kdev, buffer, type) });
    },
    writeRows(writes: readonly CacheWrite[]) {
      const encoder = kdev.device.createCommandEncoder({ label: 'kiln kv cache rows' });
      for (const { cache, rows, offset, from, count } of writes) {
        const [dst, src] = [cache.device, rows.device];
        if (!(dst instanceof GpuValue) || !(src instanceof GpuValue)) throw new Error(`cache rows ${formatType(rows.type)} and cache ${formatType(cache.type)} must both live on the GPU`);
        const bytes = DTYPE_INFO[rows.type.dtype].bytes;
        const size = count * bytes;
        if ((offset * bytes) % 4 || (from * bytes) % 4 || size % 4) throw new Error(`cache rows of ${size} bytes from element ${from} of ${formatType(rows.type)} to element ${offset} are not 4-byte aligned, as buffer copies need`);
        encoder.copyBufferToBuffer(src.buffer, from * bytes, dst.buffer, offset * bytes, size);
      }
      kdev.device.queue.submit([encoder.finish()]);
    },
  };
}
