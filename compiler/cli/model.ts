// Loading the user's model for CLI commands: the default-exported factory, its config, its weights.

import { KilnError } from '../../ir/errors.ts';
import type { HostTensor } from '../../ir/host.ts';
import { modelState, readCheckpoint } from '../checkpoint.ts';
import { type CompileOptions, type CompiledModel, type Compilation, compile } from '../compile.ts';
import { fromHost } from '../frontend/create.ts';
import type { Module } from '../frontend/module.ts';
import { manualSeed, random } from '../frontend/random.ts';
import type { Tensor } from '../frontend/tensor.ts';
import { configProblem, defaultConfigOf } from '../model-config.ts';
import { forwardArgNames } from '../tracer.ts';
import { AdamW } from '../optim.ts';
import { compileTrainStep } from '../train-step.ts';
import type { AutocastDType } from '../../passes/index.ts';
import { type FlagSpec, type ParsedArgs, stringFlag, usageError } from './args.ts';

export type ForwardModule = Module & { forward: (...args: never[]) => unknown };
export type ModelFactory = (config: Record<string, unknown>) => ForwardModule;

export function modelFactory(mod: unknown, file: string): ModelFactory {
  const factory = (mod as { default?: unknown } | null)?.default;
  if (typeof factory !== 'function') {
    throw new KilnError('KILN_E016', `${file} must default-export a function (config) => Module, e.g. export default (config) => new GPT(config)`);
  }
  return factory as ModelFactory;
}

/** The config `kiln run MODEL.ts` builds with no --weights and no --config: a nanoGPT small enough to compile and run in seconds on the CPU (Shakespeare's 65 characters). */
export const SMALL_CONFIG: Readonly<Record<string, number>> = { n_layer: 2, n_head: 4, n_embd: 64, block_size: 64, vocab_size: 65 };

/** Names --config accepts instead of JSON: gpt2 is GPT-2 124M (nanoGPT's defaults), small is SMALL_CONFIG. */
export const CONFIG_PRESETS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  gpt2: { n_layer: 12, n_head: 12, n_embd: 768, block_size: 1024, vocab_size: 50304 },
  small: SMALL_CONFIG,
};

const words = (config: Readonly<Record<string, unknown>>): string => Object.entries(config).map(([k, v]) => `${k} ${String(v)}`).join(', ');

export function parseConfigFlag(command: string, text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  if (Object.hasOwn(CONFIG_PRESETS, text)) return { ...CONFIG_PRESETS[text] };
  try {
    const v: unknown = JSON.parse(text);
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw usageError(command, `--config must be a JSON object or one of ${Object.keys(CONFIG_PRESETS).join(', ')}, got ${text}`);
}

/**
 * The config under --config when no checkpoint gives one: SMALL_CONFIG's keys --config leaves unset, for a
 * model whose defaultConfig has them all (nanoGPT's would otherwise build GPT-2 124M, 36 s a forward on the
 * CPU), with a note on stderr saying so; nothing for other models, whose own defaults apply.
 */
export function smallDefault(defaults: Readonly<Record<string, unknown>> | undefined, flagConfig: Readonly<Record<string, unknown>>, configText: string | undefined): Record<string, unknown> {
  if (!defaults || !Object.keys(SMALL_CONFIG).every((k) => Object.hasOwn(defaults, k))) return {};
  const used = Object.fromEntries(Object.entries(SMALL_CONFIG).filter(([k]) => !Object.hasOwn(flagConfig, k)));
  if (Object.keys(used).length === 0) return {};
  const why = configText === undefined ? 'no --config' : `--config leaves ${Object.keys(used).join(', ')} unset`;
  console.error(`note: ${why}: using a small nanoGPT (${words(used)}); for GPT-2 124M pass --config gpt2, or a checkpoint with --weights`);
  return used;
}

export interface LoadedModel {
  model: ForwardModule;
  config: Record<string, unknown>;
  weights: Map<string, HostTensor> | null;
}

/**
 * Builds the model from the weights' __metadata__.config (without --weights: SMALL_CONFIG, see smallDefault)
 * merged with --config, both checked against the model's `defaultConfig` when MODEL.ts exports one, then loads the weights.
 */
export async function loadModel(command: string, mod: unknown, file: string, weightsPath: string | undefined, configText: string | undefined): Promise<LoadedModel> {
  const factory = modelFactory(mod, file);
  const ckpt = weightsPath ? await readCheckpoint(weightsPath) : null;
  const flagConfig = parseConfigFlag(command, configText);
  const defaults = defaultConfigOf(mod);
  const inFile = ckpt && defaults && configProblem(ckpt.config, defaults);
  if (inFile) throw new KilnError('KILN_E005', `bad checkpoint ${weightsPath}: __metadata__.config ${inFile}`);
  const inFlag = defaults && configProblem(flagConfig, defaults);
  if (inFlag) throw usageError(command, `--config ${inFlag}`);
  const base = ckpt ? ckpt.config : smallDefault(defaults, flagConfig, configText);
  const config = { ...base, ...flagConfig };
  const model = factory(config);
  if (!model || typeof (model as { forward?: unknown }).forward !== 'function') {
    throw new KilnError('KILN_E016', `${file}'s default export returned something without a forward() method`);
  }
  if (ckpt) {
    const { state, optimizer } = modelState(model, ckpt.tensors, weightsPath!);
    if (optimizer) console.error(`note: ${weightsPath} is a training checkpoint; its optimizer state (${optimizer} optim.* tensors) is ignored`);
    model.loadStateDict(state, weightsPath);
  }
  model.eval();
  return { model, config, weights: ckpt?.tensors ?? null };
}

/** The flags every model command shares: `MODEL.ts [--weights W] [--config JSON] [--batch B --seq T]`. */
export const MODEL_FLAGS: readonly FlagSpec[] = [
  { name: 'weights', kind: 'string', file: 'input', help: 'checkpoint to load; its __metadata__.config is the config (default: fresh init, seeded)' },
  {
    name: 'config',
    kind: 'string',
    help: `JSON merged over the checkpoint config, e.g. {"flash":false}; or a preset: gpt2 (GPT-2 124M: ${words(CONFIG_PRESETS.gpt2)}), small. Without --weights a nanoGPT-style model is small (${words(SMALL_CONFIG)}) where --config does not say, and the command says so`,
  },
  { name: 'batch', kind: 'string', default: '2', help: 'batch size B of the example input' },
  { name: 'seq', kind: 'string', help: "sequence length T of the example input (default: 24, or the config's block_size if smaller)" },
];

/** `--dtype float16|float32`, nanoGPT's flag: float16 is autocast f16 (passes/autocast.ts). */
export const DTYPE_FLAG: FlagSpec = {
  name: 'dtype',
  kind: 'string',
  default: 'float32',
  help: 'float16: autocast as torch.autocast (matmul and attention in f16; layer_norm, softmax and the loss in f32; a WebGPU device needs shader-f16); float32: all in f32',
};

/** The autocast dtype `--dtype` asks for (undefined: float32); bfloat16 and typos are usage errors. */
export function autocastFlag(command: string, args: ParsedArgs): AutocastDType | undefined {
  const dtype = stringFlag(args, 'dtype');
  if (dtype === undefined || dtype === 'float32') return undefined;
  if (dtype === 'float16') return 'f16';
  if (dtype === 'bfloat16') throw usageError(command, '--dtype bfloat16: kiln has no bf16 compute on WebGPU yet (WGSL has no bf16 type); use --dtype float16 or float32');
  throw usageError(command, `--dtype must be float16 or float32, got "${dtype}"`);
}

export function positiveInt(command: string, args: ParsedArgs, name: string): number {
  const v = Number(stringFlag(args, name));
  if (!Number.isInteger(v) || v < 1) throw usageError(command, `--${name} must be a positive integer, got ${stringFlag(args, name)}`);
  return v;
}

export interface ModelSession extends LoadedModel {
  /** Example arguments: random token ids [B, T] for each of forward()'s parameters (idx, targets). */
  args: Tensor[];
  compiled: CompiledModel<ForwardModule>;
  compilation: Compilation;
  /** Milliseconds to trace, run the passes and prepare the backend. */
  compileMs: number;
}

/** The flag of the commands that can show the training step instead of the forward. */
export const TRAIN_FLAG: FlagSpec = {
  name: 'train',
  kind: 'boolean',
  help: "the compiled training step (forward in train mode, backward, clipping, AdamW): traced, canonical and fused are its forward's stages, lowered the whole step; forward() must return a loss (nanoGPT: targets are given)",
};

/** Loads the model, makes example token inputs, and compiles them (tracing, passes, codegen) without running; with --train, the training step. */
export async function modelSession(command: string, args: ParsedArgs, mod: unknown, options: CompileOptions = {}): Promise<ModelSession> {
  const B = positiveInt(command, args, 'batch');
  const autocast = autocastFlag(command, args);
  if (autocast) options = { ...options, autocast };
  manualSeed(1337);
  const loaded = await loadModel(command, mod, args.positionals[0], stringFlag(args, 'weights'), stringFlag(args, 'config'));
  // The model's own config (nanoGPT keeps it on `config`) knows block_size when --config does not say.
  const modelConfig = (loaded.model as { config?: Record<string, unknown> }).config ?? {};
  const blockSize = [loaded.config.block_size, modelConfig.block_size].find((v): v is number => typeof v === 'number') ?? Infinity;
  const T = stringFlag(args, 'seq') === undefined ? Math.min(24, blockSize) : positiveInt(command, args, 'seq');
  if (T > blockSize) throw usageError(command, `--seq ${T} is longer than the config's block_size ${blockSize}`);
  const vocab = typeof loaded.config.vocab_size === 'number' ? loaded.config.vocab_size : 50304;
  const names = forwardArgNames(loaded.model.forward);
  const inputs = names.map(() => randomTokens(command, B, T, vocab));
  const compiled = compile(loaded.model, options);
  const t0 = performance.now();
  const compilation = args.flags.get('train') ? await trainingCompilation(loaded.model, inputs, options) : await compiled.lower(...(inputs as never[]));
  return { ...loaded, args: inputs, compiled, compilation, compileMs: performance.now() - t0 };
}

/** Random token ids [B, T] below `vocab`; a size no array can hold is the flags' doing, and said to be. */
function randomTokens(command: string, B: number, T: number, vocab: number): Tensor {
  let ids: Int32Array;
  try {
    ids = new Int32Array(B * T);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw usageError(command, `--batch ${B} and --seq ${T} make ${B * T} tokens, more than fit in memory (${e.message})`);
  }
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(random() * vocab);
  return fromHost({ type: { dtype: 'i32', shape: [B, T] }, data: ids });
}

/** The training step's compilation shown as a forward's: its forward's stages up to fused, then the whole step as lowered. */
async function trainingCompilation(model: ForwardModule, inputs: Tensor[], options: CompileOptions): Promise<Compilation> {
  model.train();
  const step = compileTrainStep(model, new AdamW(model), { backend: options.backend, passes: options.passes, attentionScaling: options.attentionScaling, gradClip: 1, ...(options.autocast ? { autocast: options.autocast } : {}) });
  const c = await step.lower(...(inputs as never[]));
  const stages = new Map(c.forward.stages);
  stages.set('lowered', c.step.graph);
  const passes = { graph: c.step.graph, stages, ran: [...c.forward.ran, ...c.step.ran], decisions: c.forward.decisions };
  return { signature: c.signature, trace: c.trace, passes, run: c.run, autocast: options.autocast || undefined };
}
