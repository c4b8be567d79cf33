// Checkpoints: a model's state dict to and from safetensors files, nanoGPT key names, config in metadata.
// Floats read as f32 unless asked otherwise (`floats: 'f16'` for a model that runs in f16) and are written
// in the dtype the model holds them in unless asked otherwise (`floats: 'f16'` saves an f32 model in F16).

import { sameType } from '../ir/types.ts';
import { KilnError } from '../ir/errors.ts';
import type { HostTensor } from '../ir/host.ts';
import {
  type LoadFloats, type SafetensorsFile, type SaveFloats, type StTensorInput,
  fromKilnTensor, parseSafetensors, readSafetensors, serializeSafetensors, toKilnTensor,
} from '../runtime/safetensors.ts';
import type { Module } from './frontend/module.ts';

/** Host tensors of a parsed file, converted to kiln dtypes: floats as f32 unless `floats` says otherwise (runtime/safetensors.ts LoadFloats). */
export function hostTensors(file: SafetensorsFile, fileName: string, opts: { floats?: LoadFloats } = {}): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [key, t] of file.tensors) {
    const k = toKilnTensor(t, fileName, key, opts);
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

/**
 * A checkpoint's tensors and config. `floats: 'f16'` reads every float tensor as f16 (F16 exactly, BF16
 * and F32 rounded once), for a model that runs in f16 (`model.half()`); the default reads them as f32.
 * Either loads into a model of either dtype: loadStateDict converts to the model's dtype.
 */
export async function readCheckpoint(path: string, opts: { floats?: LoadFloats } = {}): Promise<{ tensors: Map<string, HostTensor>; config: Record<string, unknown> }> {
  const file = await readSafetensors(path);
  return { tensors: hostTensors(file, path, opts), config: configOf(file, path) };
}

/** Where a training checkpoint keeps the optimizer's state (AdamW's moments: optim.<param>.exp_avg, ...). */
export const OPTIM_PREFIX = 'optim.';

/**
 * The model's share of a checkpoint, to load with loadStateDict: a training checkpoint's optimizer state
 * (`optim.*`) left out, and tied names checked, since only one of them can be loaded: a checkpoint that
 * holds a tied weight under two names (nanoGPT's lm_head.weight and transformer.wte.weight) must hold the
 * same values under both. `optimizer` counts the tensors left out.
 */
export function modelState(model: Module, tensors: ReadonlyMap<string, HostTensor>, source: string): { state: Map<string, HostTensor>; optimizer: number } {
  const own = new Set([...model.allParameterNames().map(([name]) => name), ...model.namedBuffers().map(([name]) => name)]);
  const state = new Map([...tensors].filter(([key]) => !key.startsWith(OPTIM_PREFIX) || own.has(key)));
  const tied = new Map<unknown, string[]>();
  for (const [name, p] of model.allParameterNames()) if (state.has(name)) tied.set(p, [...(tied.get(p) ?? []), name]);
  for (const [first, ...others] of tied.values()) {
    const other = others.find((name) => !sameValues(state.get(first)!, state.get(name)!));
    if (other) {
      throw new KilnError('KILN_E006', `${source}: "${other}" differs from "${first}", which the model ties it to (one parameter, loaded once); keep one of the two keys, or untie them in the model`);
    }
  }
  return { state, optimizer: tensors.size - state.size };
}

function sameValues(a: HostTensor, b: HostTensor): boolean {
  if (!sameType(a.type, b.type)) return false;
  return a.data.every((x, i) => x === b.data[i] || (Number.isNaN(x) && Number.isNaN(b.data[i])));
}

/** Loads a checkpoint into the model (each tensor converted to the dtype of the parameter it loads into) and returns its config. */
export function loadCheckpointBytes(model: Module, bytes: Uint8Array, fileName: string, opts: { floats?: LoadFloats } = {}): Record<string, unknown> {
  const file = parseSafetensors(bytes, fileName);
  model.loadStateDict(hostTensors(file, fileName, opts), fileName);
  return configOf(file, fileName);
}

/**
 * The model's state dict as safetensors tensors, to write alone or with more: i32 as I32, bool as BOOL,
 * floats as the model holds them (f32 as F32, f16 as F16) or all as `floats` says: 'f16' for an f16
 * inference checkpoint, 'f32' for a training checkpoint's master weights.
 */
export function stateDictTensors(model: Module, opts: { floats?: SaveFloats } = {}): Map<string, StTensorInput> {
  const tensors = new Map<string, StTensorInput>();
  for (const [key, t] of model.stateDict()) tensors.set(key, fromKilnTensor({ dtype: t.type.dtype, shape: t.type.shape, data: t.data }, key, opts.floats));
  return tensors;
}

/** The model's state dict as safetensors bytes, with its config in the metadata; `floats` as stateDictTensors takes it. */
export function saveCheckpointBytes(model: Module, config?: object, opts: { floats?: SaveFloats } = {}): Uint8Array {
  return serializeSafetensors(stateDictTensors(model, opts), config ? { config: JSON.stringify(config) } : {});
}
