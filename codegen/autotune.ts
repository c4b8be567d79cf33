// The lowerings with alternatives, by op name: each declares its candidates and its rule (a
// TuningSite, codegen/tuning.ts) beside its kernels. The autotuner (runtime/webgpu/autotune.ts)
// measures the candidates of every node whose op is listed here. Adding a site is adding one line.

import type { TuningSite } from './tuning.ts';
import { matmulTuning } from './wgsl/linalg.ts';

const TUNING_SITES: Readonly<Record<string, TuningSite>> = {
  matmul: matmulTuning, // the SIMT tilings (MATMUL_TILINGS); tensor-core products have none
  matmul_epilogue: matmulTuning, // the same tilings, measured with the epilogue in the kernel
};

export function tuningSiteOf(op: string): TuningSite | undefined {
  return Object.hasOwn(TUNING_SITES, op) ? TUNING_SITES[op] : undefined;
}
