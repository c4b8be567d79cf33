// Checkpoints: a model's state dict to and from safetensors files, nanoGPT key names, config in metadata.

import { KilnError } from '../ir/errors.ts';
import type { HostTensor } from '../ir/host.ts';
import { type SafetensorsFile, type StTensorInput, parseSafetensors, readSafetensors, serializeSafetensors, toKilnTensor } from '../runtime/safetensors.ts';
import type { Module } from './frontend/module.ts';

/** Host tensors of a parsed file, converted to kiln dtypes. */
export function hostTensors(file: SafetensorsFile, fileName: string): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [key, t] of file.tensors) {
    const k = toKilnTensor(t, fileName, key);
    out.set(key, { type: { dtype: k.dtype, shape: k.shape }, data: k.data });
  }
  return out;
}

/** The config JSON stored under `__metadata__.config`, or {} when absent. */
export function configOf(file: SafetensorsFile, fileName: string): Record<string, unknown> {
  const raw = file.metadata.config;
  if (raw === undefined) return {};
  try {
    const parsed: unknown = JSON.parse(raw);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through to the error below
  }
  throw new KilnError('KILN_E005', `bad checkpoint ${fileName}: __metadata__.config is not a JSON object`);
}

export async function readCheckpoint(path: string): Promise<{ tensors: Map<string, HostTensor>; config: Record<string, unknown> }> {
  const file = await readSafetensors(path);
  return { tensors: hostTensors(file, path), config: configOf(file, path) };
}

export function loadCheckpointBytes(model: Module, bytes: Uint8Array, fileName: string): Record<string, unknown> {
  const file = parseSafetensors(bytes, fileName);
  model.loadStateDict(hostTensors(file, fileName), fileName);
  return configOf(file, fileName);
}

/** The model's state dict as safetensors tensors (f32 stays F32, i32 I32, bool BOOL), to write alone or with more. */
export function stateDictTensors(model: Module): Map<string, StTensorInput> {
  const tensors = new Map<string, StTensorInput>();
  for (const [key, t] of model.stateDict()) {
    const dtype = t.type.dtype === 'f32' ? 'F32' : t.type.dtype === 'i32' ? 'I32' : 'BOOL';
    const data = t.data instanceof Float64Array ? Float32Array.from(t.data) : t.data;
    tensors.set(key, { dtype, shape: [...t.type.shape], data });
  }
  return tensors;
}

/** The model's state dict as safetensors bytes, with its config in the metadata. */
export function saveCheckpointBytes(model: Module, config?: object): Uint8Array {
  return serializeSafetensors(stateDictTensors(model), config ? { config: JSON.stringify(config) } : {});
}
