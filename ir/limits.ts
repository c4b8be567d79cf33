// The device limits kernels are sized by. Lowerings (codegen/wgsl) read them to pick tiles; the
// gradient rule of attention asks, at WebGPU's defaults, whether its backward kernels fit at all.

/** The device limits lowerings may size workgroups by (a GPUSupportedLimits has them all). */
export interface KernelLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  /**
   * Present when the device was opened with the `subgroups` feature: the fewest invocations a subgroup
   * has. Lowerings may then shuffle values between adjacent local invocation indices, in groups up to this size.
   */
  readonly subgroupMinSize?: number;
  /** The most invocations a subgroup has, with subgroupMinSize (equal on NVIDIA: 32). */
  readonly subgroupMaxSize?: number;
  /**
   * Present when the device was opened with `chromium-experimental-subgroup-matrix` (tensor cores): the
   * f16 x f16 -> f32 shapes it multiplies (M x K times K x N), for codegen/wgsl/matmul_tc.ts.
   */
  readonly subgroupMatrix?: readonly SubgroupMatrixShape[];
}

/** One f16 x f16 -> f32 subgroup-matrix configuration a device offers. */
export interface SubgroupMatrixShape {
  readonly m: number;
  readonly n: number;
  readonly k: number;
}

/** What every WebGPU device offers: the limits a lowering assumes when its request names none. */
export const DEFAULT_KERNEL_LIMITS: KernelLimits = { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256 };
