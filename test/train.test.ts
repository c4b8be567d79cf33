import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '../runtime/safetensors.ts';
import { configOf, hostTensors, modelState } from '../compiler/checkpoint.ts';
import createModel from '../examples/nanogpt/model.ts';
import { main as sample } from '../examples/nanogpt/sample.ts';
import { type TrainResult, main as train } from '../examples/nanogpt/train.ts';

const dirs: string[] = [];
const outDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'kiln-train-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

// 2 layers, n_embd 32, block 32, batch 8: about 0.2 s an iteration on the CPU interpreter.
const tiny = ['--device', 'cpu', '--n_layer', '2', '--n_head', '2', '--n_embd', '32', '--block_size', '32', '--batch_size', '8', '--eval_iters', '8', '--log_interval', '10'];
// 20 iterations (warm-up 5, decay to 20) are a few seconds; always_save_checkpoint: the resume test
// needs the iteration-10 checkpoint even if val went up there
const schedule = [...tiny, '--eval_interval', '10', '--learning_rate', '1e-2', '--warmup_iters', '5', '--lr_decay_iters', '20', '--min_lr', '1e-3', '--always_save_checkpoint', 'true'];
const quiet = () => undefined;
const params = (r: TrainResult) => [...r.model.stateDict()].map(([k, t]) => [k, Array.from(t.data)] as const);

describe('examples/nanogpt/train.ts on the cpu backend', () => {
  const run20 = outDir();
  let straight: TrainResult;

  it('trains a tiny GPT on Shakespeare: the val loss falls by more than 0.6 nats in 20 iterations (dropout 0.2)', async () => {
    straight = await train([...schedule, '--out_dir', run20, '--max_iters', '20'], quiet);
    const vals = straight.evals.map((e) => e.val);
    console.log('evals', straight.evals.map((e) => `${e.iter}: train ${e.train.toFixed(4)} val ${e.val.toFixed(4)}`).join('; '));
    expect(straight.evals.map((e) => e.iter)).toEqual([0, 10, 20]);
    expect(vals[0]).toBeGreaterThan(4.0); // ln 65 = 4.17 at init
    expect(vals[2]).toBeLessThan(vals[0] - 0.6);
    expect(straight.iterNum).toBe(20);
    expect(straight.optimizer.stepCount).toBe(20);
    expect(straight.dtype).toBe('float32'); // --dtype auto on the cpu
  });

  it('writes a checkpoint with nanoGPT keys, optimizer state and progress metadata, loadable into a fresh model', async () => {
    const path = join(run20, 'ckpt.safetensors');
    const file = await readSafetensors(path);
    expect(file.metadata.iter_num).toBe('20');
    expect(file.metadata['optim.step']).toBe('20');
    expect(Number(file.metadata.best_val_loss)).toBe(straight.bestValLoss);
    const keys = [...file.tensors.keys()];
    expect(keys).toContain('transformer.wte.weight');
    expect(keys).toContain('optim.transformer.wte.weight.exp_avg');
    expect(keys).not.toContain('lm_head.weight'); // tied to wte, absent as in nanoGPT checkpoints
    const model = createModel(configOf(file, path));
    model.loadStateDict(modelState(model, hostTensors(file, path), path).state, path);
    expect(Array.from(model.transformer.wte.weight.host!.data)).toEqual(Array.from(straight.model.transformer.wte.weight.host!.data));
  });

  it('resumes a run: 10 iterations, then --init_from resume to 20, gives the same parameters bit for bit as 20 straight', async () => {
    const dir = outDir();
    const args = [...schedule, '--out_dir', dir];
    const first = await train([...args, '--max_iters', '10'], quiet);
    expect(first.iterNum).toBe(10);
    const second = await train([...args, '--max_iters', '20', '--init_from', 'resume'], quiet);
    expect(second.trainLosses[0][0]).toBe(10); // continues at iter 10
    expect(second.optimizer.stepCount).toBe(20);
    expect(second.iterNum).toBe(20);
    expect(params(second)).toEqual(params(straight));
  });

  it('samples text of the asked length from the checkpoint, reproducibly for a seed', async () => {
    const args = ['--out_dir', run20, '--num_samples', '2', '--max_new_tokens', '30', '--device', 'cpu'];
    const samples = await sample(args, quiet);
    expect(samples).toHaveLength(2);
    for (const s of samples) expect([...s]).toHaveLength(31); // the "\n" prompt + 30 new characters
    expect(await sample(args, quiet)).toEqual(samples);
  });

  it('draws the loss curve as an SVG with a train polyline and val points', () => {
    const svg = readFileSync(join(run20, 'loss.svg'), 'utf-8');
    expect(svg).toMatch(/^<svg /);
    expect(svg.match(/<polyline /g)).toHaveLength(2);
    expect(svg).toContain('>iteration<');
  });

  it('trains with --dtype float16 on the cpu (f16 emulated): autocast with loss scaling, the scale in the log line, an F32 checkpoint', async () => {
    const dir = outDir();
    const lines: string[] = [];
    const r = await train([...tiny, '--dtype', 'float16', '--out_dir', dir, '--max_iters', '4', '--eval_interval', '4', '--eval_iters', '1', '--log_interval', '2'], (text) => void lines.push(text));
    expect(r.dtype).toBe('float16');
    expect(lines.join('')).toMatch(/\niter 2: loss \d\.\d{4}, lr [\d.e-]+, time \d+ms, scale 65536, eta (\d+s|\d+m \d\ds)\n/);
    expect(r.skippedIters).toEqual([]);
    expect(r.optimizer.stepCount).toBe(4);
    // The master weights and AdamW's moments, as training resumes from them.
    const file = await readSafetensors(join(dir, 'ckpt.safetensors'));
    expect(new Set([...file.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F32']));
    // The loss scaler's state, so a resumed run goes on from the scale it reached.
    expect(file.metadata['amp.scale']).toBe('65536');
    expect(file.metadata['amp.growth_tracker']).toBe(file.metadata.iter_num); // every step so far a good one
  });

  it('refuses --dtype bfloat16, and float16 with --compile false (loss scaling is in the compiled step)', async () => {
    await expect(train([...tiny, '--dtype', 'bfloat16'], quiet)).rejects.toThrow(/KILN_E015 --dtype bfloat16: kiln has no bf16 compute/);
    await expect(train([...tiny, '--dtype', 'float16', '--compile', 'false'], quiet)).rejects.toThrow(/KILN_E015 --dtype float16 needs --compile true/);
    await expect(train([...tiny, '--dtype', 'half'], quiet)).rejects.toThrow(/KILN_E015 --dtype must be float16, float32 or auto, got half/);
  });

  it('refuses an unknown flag', async () => {
    await expect(train(['--n_layers', '2'], quiet)).rejects.toThrow(/KILN_E015 unknown flag --n_layers/);
  });

  it('runs through npm run train (bin/run-ts.mjs bundles the script with esbuild)', () => {
    const dir = outDir();
    const out = execFileSync('npm', ['run', '--silent', 'train', '--', ...tiny, '--out_dir', dir, '--max_iters', '2', '--eval_interval', '2', '--eval_iters', '1', '--log_interval', '1'], { encoding: 'utf-8' });
    expect(out).toMatch(/iter 1: loss \d\.\d{4}, lr [\d.e-]+, time \d+ms/);
    expect(existsSync(join(dir, 'ckpt.safetensors'))).toBe(true);
  });
});
