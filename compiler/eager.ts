// Eager mode: model.forward on real tensors runs op by op on the chosen backend's kernels.

import { type BackendName, loadBackend } from './backends.ts';
import { cpuBackend } from './cpu.ts';
import { setEagerBackend } from './frontend/dispatch.ts';

setEagerBackend(cpuBackend.eager);

/** Chooses where eager ops run (default cpu). `await useBackend('webgpu')` opens the GPU first. */
export async function useBackend(name: BackendName): Promise<void> {
  setEagerBackend((await loadBackend(name)).eager);
}
