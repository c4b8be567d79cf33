// The checkpoint train.ts writes and resumes from, and sample.ts reads: nanoGPT's state dict (tied lm_head
// absent), AdamW's moments (optim.*), and in __metadata__ the model config, iter_num, best_val_loss,
// optim.step and the characters to decode with (nanoGPT's meta.pkl). Each field is checked where it is
// read, so a bad file is one KILN_E005 line naming the file and the field, not a NaN iteration that never ends.
// Its weights are F32 always: they are the master weights training resumes from, f32 under autocast as
// torch.amp keeps them. An inference checkpoint (weights, config and characters) can be saved in F16.

import { KilnError, type HostTensor } from '../../index.ts';
import { configOf, hostTensors, stateDictTensors } from '../../compiler/checkpoint.ts';
import { configProblem } from '../../compiler/model-config.ts';
import { type AdamW, type GradScaler, OPTIM_STEP_KEY } from '../../compiler/optim.ts';
import { type LoadFloats, type SaveFloats, readSafetensors, serializeSafetensors } from '../../runtime/safetensors.ts';
import type { CharDataset } from './data.ts';
import { type GPT, type GPTConfig, defaultConfig } from './model.ts';

export interface TrainingCheckpoint {
  readonly path: string;
  /** The config the model was trained with (nanoGPT's model_args), its types checked against defaultConfig. */
  readonly config: Partial<GPTConfig>;
  readonly tensors: Map<string, HostTensor>;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * kiln's state dict + optimizer state, with config and progress in the metadata; every float tensor F32,
 * whatever dtype the model holds. A float16 run's loss scaler adds its scale and growth tracker
 * (amp.scale, amp.growth_tracker), so a resumed run goes on from the scale it reached.
 */
export function checkpointBytes(model: GPT, optimizer: AdamW, data: CharDataset, iterNum: number, bestValLoss: number, scaler?: GradScaler): Uint8Array {
  const tensors = stateDictTensors(model, { floats: 'f32' });
  const optim = optimizer.stateTensors();
  for (const [key, t] of optim.tensors) tensors.set(key, t);
  return serializeSafetensors(tensors, {
    config: JSON.stringify(model.config),
    iter_num: String(iterNum),
    best_val_loss: String(bestValLoss),
    [OPTIM_STEP_KEY]: optim.metadata[OPTIM_STEP_KEY],
    chars: JSON.stringify(data.chars),
    ...scaler?.stateMetadata(),
  });
}

/**
 * The weights for sampling, without optimizer state or progress: floats as the model holds them, or all
 * as `floats` says ('f16' halves the file of an f32 model, rounding each weight once). sample.ts reads it
 * as it reads a training checkpoint; train.ts cannot resume from it.
 */
export function inferenceCheckpointBytes(model: GPT, data: CharDataset, floats: SaveFloats = 'as-held'): Uint8Array {
  return serializeSafetensors(stateDictTensors(model, { floats }), { config: JSON.stringify(model.config), chars: JSON.stringify(data.chars) });
}

/**
 * Reads a checkpoint and its model config (which must be there: resuming and sampling rebuild the model
 * from it). Floats read as f32 (what resuming needs: AdamW's moments are f32) unless `floats` says
 * otherwise: 'f16' for sampling with a model that runs in f16.
 */
export async function readTrainingCheckpoint(path: string, opts: { floats?: LoadFloats } = {}): Promise<TrainingCheckpoint> {
  const file = await readSafetensors(path);
  if (file.metadata.config === undefined) throw bad(path, '__metadata__.config is missing; train.ts writes the model config there');
  const config = configOf(file, path);
  const problem = configProblem(config, defaultConfig);
  if (problem) throw bad(path, `__metadata__.config ${problem}`);
  return { path, config: config as Partial<GPTConfig>, tensors: hostTensors(file, path, opts), metadata: file.metadata };
}

/** Where the run stopped: the iteration to continue from, and the best validation loss so far. */
export function progressOf(ckpt: TrainingCheckpoint): { iterNum: number; bestValLoss: number } {
  return {
    iterNum: field(ckpt, 'iter_num', 'a whole number of iterations', (raw) => (/^\d+$/.test(raw) ? Number(raw) : undefined)),
    bestValLoss: field(ckpt, 'best_val_loss', 'a number', (raw) => (raw.trim() !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : undefined)),
  };
}

/** The characters of the vocabulary, by token id. */
export function charsOf(ckpt: TrainingCheckpoint): string[] {
  return field(ckpt, 'chars', 'a JSON array of characters', (raw) => {
    try {
      const chars: unknown = JSON.parse(raw);
      return Array.isArray(chars) && chars.every((c) => typeof c === 'string') ? chars : undefined;
    } catch {
      return undefined;
    }
  });
}

function field<T>(ckpt: TrainingCheckpoint, key: string, expected: string, parse: (raw: string) => T | undefined): T {
  const raw = ckpt.metadata[key];
  const value = raw === undefined ? undefined : parse(raw);
  if (value === undefined) throw bad(ckpt.path, `__metadata__.${key} is ${raw === undefined ? 'missing' : JSON.stringify(raw)}, expected ${expected} (train.ts writes it)`);
  return value;
}

function bad(path: string, detail: string): KilnError {
  return new KilnError('KILN_E005', `bad checkpoint ${path}: ${detail}`);
}
