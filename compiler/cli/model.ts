// Loading the user's model for CLI commands: the default-exported factory, its config, its weights.

import { KilnError } from '../../ir/errors.ts';
import type { HostTensor } from '../../ir/host.ts';
import { readCheckpoint } from '../checkpoint.ts';
import type { Module } from '../frontend/module.ts';
import { usageError } from './args.ts';

export type ForwardModule = Module & { forward: (...args: never[]) => unknown };
export type ModelFactory = (config: Record<string, unknown>) => ForwardModule;

export function modelFactory(mod: unknown, file: string): ModelFactory {
  const factory = (mod as { default?: unknown } | null)?.default;
  if (typeof factory !== 'function') {
    throw new KilnError('KILN_E016', `${file} must default-export a function (config) => Module, e.g. export default (config) => new GPT(config)`);
  }
  return factory as ModelFactory;
}

export function parseConfigFlag(command: string, text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw usageError(command, `--config must be a JSON object, got ${text}`);
}

export interface LoadedModel {
  model: ForwardModule;
  config: Record<string, unknown>;
  weights: Map<string, HostTensor> | null;
}

/** Builds the model from the weights' __metadata__.config merged with --config, then loads the weights. */
export async function loadModel(command: string, mod: unknown, file: string, weightsPath: string | undefined, configText: string | undefined): Promise<LoadedModel> {
  const factory = modelFactory(mod, file);
  const ckpt = weightsPath ? await readCheckpoint(weightsPath) : null;
  const config = { ...(ckpt?.config ?? {}), ...parseConfigFlag(command, configText) };
  const model = factory(config);
  if (!model || typeof (model as { forward?: unknown }).forward !== 'function') {
    throw new KilnError('KILN_E016', `${file}'s default export returned something without a forward() method`);
  }
  if (ckpt) model.loadStateDict(ckpt.tensors, weightsPath);
  model.eval();
  return { model, config, weights: ckpt?.tensors ?? null };
}
