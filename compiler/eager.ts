// Eager mode: model.forward on real tensors runs op by op on the chosen backend's kernels.

import { setEagerBackend } from './frontend/dispatch.ts';
import { type BackendName, cpuBackend } from './backends.ts';
import { loadBackend } from './compile.ts';

setEagerBackend(cpuBackend.eager);

/** Chooses where eager ops run (default cpu). `await useBackend('webgpu')` opens the GPU first. */
export async function useBackend(name: BackendName): Promise<void> {
  setEagerBackend((await loadBackend(name)).eager);
}
