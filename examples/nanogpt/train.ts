// nanoGPT's train.py for kiln: char-level Shakespeare, AdamW, cosine learning rate, periodic eval,
// safetensors checkpoints with optimizer state, resume, and a loss curve as SVG.
// Defaults are config/train_shakespeare_char.py; every one can be overridden: --n_layer 2 --lr ... .
// --device webgpu (default) or cpu; --compile true (default) runs each iteration as one compiled
// training step (forward, backward, clipping and AdamW in one graph: compiler/train-step.ts), the
// weights staying on the device; --compile false takes the gradients and the AdamW step separately.
// --dtype float16 (nanoGPT's flag) trains in mixed precision inside that step: autocast f16 (matmul and
// attention in f16), f32 master weights and AdamW state, and dynamic loss scaling (GradScaler); it is the
// default on a WebGPU device with shader-f16, float32 elsewhere (the cpu emulates f16: ask for it there).
// Run: npm run train -- --device cpu --n_layer 2 --n_embd 32 --block_size 32 --batch_size 8 --max_iters 50

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { KilnError, Tensor, compile, manualSeed } from '../../index.ts';
import type { BackendName } from '../../compiler/backends.ts';
import { compileTrainStep } from '../../compiler/train-step.ts';
import { lossAndGradients } from '../../compiler/autograd.ts';
import { modelState } from '../../compiler/checkpoint.ts';
import { progressText, timeLeft } from '../../compiler/cli/progress.ts';
import { fileError, reportError } from '../../compiler/cli/report.ts';
import { AdamW, GradScaler, SCALER_SCALE_KEY, clipGradNorm, learningRate } from '../../compiler/optim.ts';
import { writeFileAtomic } from '../../runtime/files.ts';
import { type TrainingCheckpoint, checkpointBytes, progressOf, readTrainingCheckpoint } from './checkpoint.ts';
import { type CharDataset, SHAKESPEARE_PATH, type Split, loadShakespeareChar } from './data.ts';
import { TrainingInterrupts } from './interrupt.ts';
import { GPT, type GPTConfig, defaultConfig } from './model.ts';

export const trainDefaults = {
  // I/O
  out_dir: 'out-shakespeare-char',
  data: fileURLToPath(SHAKESPEARE_PATH), // the text to train on (tiny Shakespeare)
  eval_interval: 250,
  log_interval: 10,
  eval_iters: 200,
  eval_only: false,
  always_save_checkpoint: false, // only save when val improves
  init_from: 'scratch', // 'scratch' or 'resume'
  // data
  batch_size: 64,
  block_size: 256, // context of up to 256 previous characters
  // model
  n_layer: 6,
  n_head: 6,
  n_embd: 384,
  dropout: 0.2,
  bias: false,
  // adamw optimizer
  learning_rate: 1e-3, // with baby networks can afford to go a bit higher
  max_iters: 5000,
  weight_decay: 1e-1,
  beta1: 0.9,
  beta2: 0.99, // make a bit bigger because number of tokens per iter is small
  grad_clip: 1.0, // clip gradients at this value, or disable if == 0.0
  // learning rate decay settings
  decay_lr: true,
  warmup_iters: 100,
  lr_decay_iters: 5000, // make equal to max_iters usually
  min_lr: 1e-4, // learning_rate / 10 usually
  seed: 1337,
  // system
  device: 'webgpu', // 'webgpu' or 'cpu'
  dtype: 'auto', // 'float32' or 'float16' (autocast + loss scaling); auto: float16 where the device has shader-f16
  compile: true, // one compiled graph per training step
};
export type TrainConfig = typeof trainDefaults;

/** `--name value` or `--name=value` over a table of defaults; the default's type types the value; unknown names are errors. */
export function parseFlags<T extends Record<string, string | number | boolean>>(argv: readonly string[], defaults: T): T {
  const out: Record<string, string | number | boolean> = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new KilnError('KILN_E015', `unexpected argument ${JSON.stringify(arg)}; flags look like --max_iters 50`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (!(name in defaults)) throw new KilnError('KILN_E015', `unknown flag --${name}; known: ${Object.keys(defaults).map((k) => `--${k}`).join(' ')}`);
    const raw = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (raw === undefined) throw new KilnError('KILN_E015', `flag --${name} needs a value`);
    const kind = typeof defaults[name];
    if (kind === 'number') {
      const value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value)) throw new KilnError('KILN_E015', `flag --${name} needs a number, got ${JSON.stringify(raw)}`);
      out[name] = value;
    } else if (kind === 'boolean') {
      if (raw !== 'true' && raw !== 'false') throw new KilnError('KILN_E015', `flag --${name} needs true or false, got ${JSON.stringify(raw)}`);
      out[name] = raw === 'true';
    } else {
      out[name] = raw;
    }
  }
  return out as T;
}

export interface TrainResult {
  model: GPT;
  optimizer: AdamW;
  iterNum: number;
  bestValLoss: number;
  /** Train loss of each step taken in this run, by iteration. */
  trainLosses: [iter: number, loss: number][];
  /** Mean losses at each eval of this run. */
  evals: { iter: number; train: number; val: number }[];
  /** What --dtype resolved to. */
  dtype: 'float32' | 'float16';
  /** float16: iterations whose step found an inf or NaN gradient and was skipped (GradScaler). */
  skippedIters: number[];
  /** float16: the loss scaler, its scale as the run left it. */
  scaler?: GradScaler;
}

const CKPT = 'ckpt.safetensors';

/**
 * Runs train.py's loop; `log` receives the progress text (stdout by default, with a \\r bar when it is a TTY).
 * SIGINT or SIGTERM meanwhile ends the process with one line, after any checkpoint save in progress.
 */
export async function main(argv: readonly string[], logTo?: (text: string) => void): Promise<TrainResult> {
  const tty = !logTo && (process.stdout.isTTY ?? false);
  const interrupts = new TrainingInterrupts(() => tty && process.stdout.write('\n'));
  try {
    return await train(argv, logTo, tty, interrupts);
  } finally {
    interrupts.dispose();
  }
}

async function train(argv: readonly string[], logTo: ((text: string) => void) | undefined, tty: boolean, interrupts: TrainingInterrupts): Promise<TrainResult> {
  const log = logTo ?? ((text: string) => void process.stdout.write(text));
  const cfg = parseFlags(argv, trainDefaults);
  if (cfg.init_from !== 'scratch' && cfg.init_from !== 'resume') throw new KilnError('KILN_E015', `--init_from must be scratch or resume, got ${cfg.init_from}`);
  if (cfg.device !== 'webgpu' && cfg.device !== 'cpu') throw new KilnError('KILN_E015', `--device must be webgpu or cpu, got ${cfg.device}`);
  for (const flag of ['batch_size', 'block_size'] as const) {
    if (!Number.isInteger(cfg[flag]) || cfg[flag] < 1) throw new KilnError('KILN_E015', `--${flag} must be a positive integer, got ${cfg[flag]}`);
  }
  const device: BackendName = cfg.device;
  const dtype = await resolveDtype(cfg);
  const autocast = dtype === 'float16' ? ('f16' as const) : undefined;
  const data = await loadShakespeareChar(cfg.data).catch((e: unknown) => {
    throw fileError(e, cfg.data, '--data');
  });
  const ckptPath = join(cfg.out_dir, CKPT);
  try {
    mkdirSync(cfg.out_dir, { recursive: true });
  } catch (e) {
    throw fileError(e, cfg.out_dir, '--out_dir');
  }
  // every file this run writes lies in --out_dir
  const writeOut = (path: string, bytes: Uint8Array | string) => writeFileAtomic(path, bytes).catch((e: unknown) => {
    throw fileError(e, path, '--out_dir');
  });

  // model init: from scratch, or the checkpoint's config and weights (its config wins, as in nanoGPT)
  let modelArgs: GPTConfig = {
    ...defaultConfig,
    n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, block_size: cfg.block_size,
    bias: cfg.bias, vocab_size: data.vocabSize, dropout: cfg.dropout,
  };
  let iterNum = 0;
  let bestValLoss = Infinity;
  let resumed: TrainingCheckpoint | null = null;
  if (cfg.init_from === 'resume') {
    const ckpt = await readTrainingCheckpoint(ckptPath);
    modelArgs = { ...modelArgs, ...ckpt.config, dropout: cfg.dropout };
    ({ iterNum, bestValLoss } = progressOf(ckpt));
    if (cfg.block_size > modelArgs.block_size) {
      throw new KilnError('KILN_E015', `--block_size ${cfg.block_size} is larger than the block_size ${modelArgs.block_size} of ${ckptPath}, which resuming keeps; resume with --block_size ${modelArgs.block_size} or less`);
    }
    resumed = ckpt;
    log(`resuming from ${ckptPath} at iter ${iterNum}\n`);
    interrupts.checkpoint = { path: ckptPath, iter: iterNum };
  }
  manualSeed(cfg.seed);
  const model = new GPT(modelArgs);
  const optimizer = new AdamW(model, { lr: cfg.learning_rate, betas: [cfg.beta1, cfg.beta2], weightDecay: cfg.weight_decay });
  if (resumed) {
    model.loadStateDict(modelState(model, resumed.tensors, ckptPath).state, ckptPath);
    optimizer.loadState(resumed.tensors, resumed.metadata, ckptPath);
  }
  log(`number of parameters: ${(model.getNumParams() / 1e6).toFixed(2)}M\n`);
  // float16: torch.amp's recipe, nanoGPT's GradScaler(enabled=(dtype == 'float16')) with torch's defaults
  const scaler = autocast ? new GradScaler() : undefined;
  // a float16 checkpoint holds the scale it reached (amp.scale, amp.growth_tracker): resuming goes on from it
  if (scaler && resumed && resumed.metadata[SCALER_SCALE_KEY] !== undefined) scaler.loadState(resumed.metadata, ckptPath);
  const trainStep = cfg.compile ? compileTrainStep(model, optimizer, { backend: device, gradClip: cfg.grad_clip, autocast, scaler: scaler ?? false }) : null;
  // eval runs compiled on the same device, under the same autocast (eager on the host when not compiling)
  const evalForward = cfg.compile ? compile(model, { backend: device, autocast: autocast ?? false }) : null;
  const forLoss: LossFn = async (x, y) => (evalForward ? await evalForward(x, y) : model.forward(x, y)).loss!.item();
  // The train losses (and whether a step was skipped) are read every log_interval iterations, not each step: reading waits for the GPU.
  const unread: [iter: number, loss: Tensor, skipped: Tensor | undefined][] = [];
  let skippedSinceLog = 0;
  const readLosses = async () => {
    for (const [iter, loss, skipped] of unread.splice(0)) {
      result.trainLosses.push([iter, await loss.item()]);
      if (skipped && (await skipped.item()) !== 0) (result.skippedIters.push(iter), skippedSinceLog++);
    }
  };

  const schedule = { learningRate: cfg.learning_rate, warmupIters: cfg.warmup_iters, lrDecayIters: cfg.lr_decay_iters, minLr: cfg.min_lr };
  const result: TrainResult = { model, optimizer, iterNum, bestValLoss, trainLosses: [], evals: [], dtype, skippedIters: [], ...(scaler ? { scaler } : {}) };
  const started = iterNum;
  let last = performance.now();
  const loopStart = last; // the rate and the time left count this run's iterations only (a resumed run's start is `started`)
  let lastLogged = iterNum - 1;
  for (;;) {
    interrupts.iter = iterNum;
    // evaluate the loss on train/val sets and write checkpoints
    if (iterNum % cfg.eval_interval === 0 || iterNum === cfg.max_iters) {
      await readLosses();
      const losses = await estimateLoss(model, forLoss, data, cfg, iterNum);
      if (tty) log('\n');
      log(`step ${iterNum}: train loss ${losses.train.toFixed(4)}, val loss ${losses.val.toFixed(4)}\n`);
      result.evals.push({ iter: iterNum, ...losses });
      if (losses.val < bestValLoss || cfg.always_save_checkpoint) {
        bestValLoss = Math.min(bestValLoss, losses.val);
        if (iterNum > started || cfg.init_from === 'scratch') {
          log(`saving checkpoint to ${cfg.out_dir}\n`);
          await interrupts.saving(async () => {
            await trainStep?.sync(); // parameters and moments back from the device
            await writeOut(ckptPath, checkpointBytes(model, optimizer, data, iterNum, bestValLoss, scaler));
            interrupts.checkpoint = { path: ckptPath, iter: iterNum };
          });
        }
      }
      await interrupts.saving(() => writeOut(join(cfg.out_dir, 'loss.svg'), lossCurveSvg(result.trainLosses, result.evals)));
      [last, lastLogged] = [performance.now(), iterNum - 1]; // eval time is not iteration time
    }
    if (iterNum >= cfg.max_iters || cfg.eval_only) break;

    // determine and set the learning rate for this iteration
    const lr = cfg.decay_lr ? learningRate(iterNum, schedule) : cfg.learning_rate;
    optimizer.lr = lr;
    // the batch and the dropout seeds follow from (seed, iter_num) alone, so a resumed run repeats them
    manualSeed(cfg.seed + iterNum);
    const { x, y } = batchOf(data, 'train', cfg);
    const dropoutSeed = cfg.seed + 1_000_003 * (iterNum + 1);
    manualSeed(dropoutSeed);
    if (trainStep) {
      const { loss, skipped } = await trainStep(x, y);
      unread.push([iterNum, loss, skipped]);
    } else {
      const { loss, grads } = await lossAndGradients(model, [x, y], { backend: device });
      if (cfg.grad_clip !== 0) clipGradNorm(grads, cfg.grad_clip);
      optimizer.step(grads);
      result.trainLosses.push([iterNum, loss]);
    }

    // timing and logging
    if (iterNum % cfg.log_interval === 0) {
      await readLosses(); // waits for the GPU: the time below is the iterations', not the queue's
      const now = performance.now();
      const dt = (now - last) / Math.max(1, iterNum - lastLogged);
      [last, lastLogged] = [now, iterNum];
      const loss = result.trainLosses[result.trainLosses.length - 1][1];
      // float16: the loss scale now, and the steps skipped since the last line (an inf or NaN gradient)
      const amp = scaler ? `, scale ${await scaler.getScale()}${skippedSinceLog ? `, skipped ${skippedSinceLog}` : ''}` : '';
      skippedSinceLog = 0;
      const line = `iter ${iterNum}: loss ${loss.toFixed(4)}, lr ${lr.toExponential(2)}, time ${dt.toFixed(0)}ms${amp}`;
      // on a terminal a bar with the rate and the time left, redrawn in place; elsewhere a plain line that ends with the time left
      log(tty ? `\r${progressText(iterNum + 1, cfg.max_iters, now - loopStart, { base: started, width: 20 })}  ${line}\x1b[K` : `${line}, eta ${timeLeft(iterNum + 1, cfg.max_iters, now - loopStart, started)}\n`);
    }
    iterNum++;
  }
  if (tty) log('\n');
  await readLosses();
  await trainStep?.sync();
  result.iterNum = iterNum;
  result.bestValLoss = bestValLoss;
  return result;
}

/**
 * --dtype: float16 or float32, as asked; auto is float16 where the WebGPU device has shader-f16 (nanoGPT
 * trains in low precision by default), float32 elsewhere: on the cpu (which emulates f16, slowly) and
 * with --compile false (loss scaling runs inside the compiled step).
 */
async function resolveDtype(cfg: TrainConfig): Promise<'float32' | 'float16'> {
  if (cfg.dtype === 'bfloat16') throw new KilnError('KILN_E015', '--dtype bfloat16: kiln has no bf16 compute on WebGPU yet (WGSL has no bf16 type); use --dtype float16 or float32');
  if (cfg.dtype !== 'auto' && cfg.dtype !== 'float16' && cfg.dtype !== 'float32') throw new KilnError('KILN_E015', `--dtype must be float16, float32 or auto, got ${cfg.dtype}`);
  if (cfg.dtype === 'float16' && !cfg.compile) throw new KilnError('KILN_E015', '--dtype float16 needs --compile true: loss scaling runs inside the compiled training step');
  const f16Device = cfg.device === 'webgpu' && (cfg.dtype !== 'float32') ? (await (await import('../../runtime/webgpu/index.ts')).getDevice()).f16 : false;
  if (cfg.dtype === 'float16' && cfg.device === 'webgpu' && !f16Device) {
    throw new KilnError('KILN_E021', '--dtype float16 needs a WebGPU device with shader-f16, and this one has none; use --dtype float32 (or a device that has it: kiln explain --device webgpu says)');
  }
  if (cfg.dtype !== 'auto') return cfg.dtype;
  return cfg.compile && f16Device ? 'float16' : 'float32';
}

/** A batch of --batch_size rows of --block_size tokens; a size no array can hold is the flags' doing, and said to be. */
function batchOf(data: CharDataset, split: Split, cfg: TrainConfig): { x: Tensor; y: Tensor } {
  try {
    return data.getBatch(split, cfg.batch_size, cfg.block_size);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    const tokens = cfg.batch_size * cfg.block_size;
    throw new KilnError('KILN_E015', `--batch_size ${cfg.batch_size} with --block_size ${cfg.block_size} makes batches of ${tokens} tokens, more than fit in memory (${e.message})`);
  }
}

/** Mean loss over eval_iters batches of each split, in eval mode; batches seeded by the iteration. */
type LossFn = (x: Tensor, y: Tensor) => Promise<number>;

async function estimateLoss(model: GPT, lossOf: LossFn, data: CharDataset, cfg: TrainConfig, iterNum: number): Promise<Record<Split, number>> {
  model.eval();
  manualSeed(cfg.seed + 7_919 * (iterNum + 1) + 500_000_000);
  const out = { train: 0, val: 0 };
  for (const split of ['train', 'val'] as const) {
    let sum = 0;
    for (let k = 0; k < cfg.eval_iters; k++) {
      const { x, y } = batchOf(data, split, cfg);
      sum += await lossOf(x, y);
    }
    out[split] = sum / cfg.eval_iters;
  }
  model.train();
  return out;
}

/** A hand-made SVG: train loss per iteration (polyline), val loss at evals (polyline + dots), labelled axes. */
export function lossCurveSvg(train: readonly [number, number][], evals: readonly { iter: number; val: number }[]): string {
  const W = 640, H = 400, left = 60, right = 20, top = 20, bottom = 50;
  const points = [...train.map(([i, l]) => [i, l]), ...evals.map((e) => [e.iter, e.val])];
  const iters = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  const x0 = Math.min(...iters, 0), x1 = Math.max(...iters, x0 + 1);
  const y0 = losses.length ? Math.min(...losses) : 0;
  const y1 = Math.max(...losses, y0 + 1e-3);
  const sx = (i: number) => (left + ((i - x0) / (x1 - x0)) * (W - left - right)).toFixed(1);
  const sy = (l: number) => (top + ((y1 - l) / (y1 - y0)) * (H - top - bottom)).toFixed(1);
  const poly = (pts: readonly (readonly number[])[], color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.map(([i, l]) => `${sx(i)},${sy(l)}`).join(' ')}"/>`;
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<line x1="${left}" y1="${H - bottom}" x2="${W - right}" y2="${H - bottom}" stroke="black"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${H - bottom}" stroke="black"/>`,
    ...ticks.map((t) => `<text x="${sx(x0 + t * (x1 - x0))}" y="${H - bottom + 15}" text-anchor="middle">${Math.round(x0 + t * (x1 - x0))}</text>`),
    ...ticks.map((t) => `<text x="${left - 5}" y="${sy(y0 + t * (y1 - y0))}" text-anchor="end">${(y0 + t * (y1 - y0)).toFixed(2)}</text>`),
    `<text x="${(left + W - right) / 2}" y="${H - 10}" text-anchor="middle">iteration</text>`,
    `<text x="15" y="${(top + H - bottom) / 2}" text-anchor="middle" transform="rotate(-90 15 ${(top + H - bottom) / 2})">loss</text>`,
    poly(train, 'steelblue'),
    poly(evals.map((e) => [e.iter, e.val]), 'darkorange'),
    ...evals.map((e) => `<circle cx="${sx(e.iter)}" cy="${sy(e.val)}" r="3" fill="darkorange"/>`),
    `<text x="${W - right - 5}" y="${top + 12}" text-anchor="end" fill="steelblue">train loss</text>`,
    `<text x="${W - right - 5}" y="${top + 28}" text-anchor="end" fill="darkorange">val loss</text>`,
    '</svg>',
    '',
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // every error is one coded line, never a stack trace (KILN_DEBUG=1 adds it)
  await main(process.argv.slice(2)).catch((e: unknown) => {
    reportError(e);
    process.exitCode = 1;
  });
}
