// The backends kiln runs graphs and eager ops on, by name. Each is loaded on first use: nothing of
// WebGPU (Dawn in Node) loads until something runs on `webgpu`.

import { KilnError } from '../ir/errors.ts';
import type { ExecutionBackend } from './backend.ts';
import { cpuBackend } from './cpu.ts';

const BACKENDS = {
  cpu: async () => cpuBackend, // the reference interpreter, in f32
  webgpu: async () => (await import('./webgpu.ts')).webgpuBackend(), // generated WGSL on the machine's adapter
} satisfies Record<string, () => Promise<ExecutionBackend>>;

export type BackendName = keyof typeof BACKENDS;

export async function loadBackend(name: BackendName): Promise<ExecutionBackend> {
  if (!Object.hasOwn(BACKENDS, name)) throw new KilnError('KILN_E011', `unknown backend "${name}"; use ${Object.keys(BACKENDS).join(' or ')}`);
  return BACKENDS[name]();
}
