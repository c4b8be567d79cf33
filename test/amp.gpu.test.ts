// Mixed-precision training on lavapipe (shader-f16, bit-exact f16): the issue's run, nanoGPT trained by
// train.ts with --dtype float16 against --dtype float32, and GradScaler's kernels (found_inf,
// amp_update_scale, adamw_update's skip) on the GPU against the cpu backend. The cpu tests: amp.test.ts.
import './lavapipe.ts';

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GradScaler, type Tensor, compileTrainStep } from '../index.ts';
import type { BackendName } from '../compiler/backends.ts';
import { main as train } from '../examples/nanogpt/train.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';
import { batch, fresh } from './train-step-cases.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-amp-'));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await releaseDevice();
});

// 2 layers, 64 wide, 4 heads, on Shakespeare: batches of 8 x 32 tokens (about 0.15 s an iteration in each
// dtype on lavapipe; 12 x 64 took 0.3 s), dropout 0, nanoGPT's learning rate warmed up over 20
// iterations and decayed to 1e-4 at 200. Both runs draw the same batches (seeded by the iteration).
const RUN = ['--device', 'webgpu', '--n_layer', '2', '--n_head', '4', '--n_embd', '64', '--block_size', '32', '--batch_size', '8', '--dropout', '0', '--max_iters', '200',
  '--warmup_iters', '20', '--lr_decay_iters', '200', '--min_lr', '1e-4', '--eval_interval', '200', '--eval_iters', '2', '--log_interval', '50'];

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;

describe.skipIf(!HAS_LAVAPIPE)('mixed-precision training on lavapipe', () => {
  it('trains nanoGPT (2 layers, 64 wide) on Shakespeare for 200 iterations with --dtype float16, every loss within 2% of the --dtype float32 run', async () => {
    const curves: Record<string, number[]> = {};
    for (const dtype of ['float32', 'float16']) {
      const started = performance.now();
      const r = await train([...RUN, '--dtype', dtype, '--out_dir', join(dir, dtype)], () => undefined);
      expect(r.dtype).toBe(dtype);
      curves[dtype] = r.trainLosses.map(([, loss]) => loss);
      console.log(`${dtype}: ${((performance.now() - started) / 1000).toFixed(0)} s, loss ${curves[dtype][0].toFixed(4)} -> ${curves[dtype][199].toFixed(4)}${r.scaler ? `, scale ${await r.scaler.getScale()}, skipped ${JSON.stringify(r.skippedIters)}` : ''}`);
    }
    const [f32, f16] = [curves.float32, curves.float16];
    expect(f16).toHaveLength(200);
    // The f16 run trained (the loss fell by more than a nat) and is not the f32 run (it computed in f16).
    expect(mean(f16.slice(-10))).toBeLessThan(mean(f16.slice(0, 10)) - 1);
    expect(f16.some((loss, i) => loss !== f32[i])).toBe(true);
    // The issue's bound, 2%, at every iteration (stricter than on a smoothed curve). What f16 changes:
    // each matmul's operands and result and attention's inputs rounded to f16 (u = 2^-11 relative), whose
    // errors on the loss, a mean over 256 tokens, mostly cancel; over 200 steps the two runs drift apart
    // only as far as AdamW's updates carry those differences. Measured: 3.3e-5 at worst, 7.9e-6 at worst
    // between means over windows of 10 iterations.
    const relative = f16.map((loss, i) => Math.abs(loss - f32[i]) / f32[i]);
    const windows = Array.from({ length: 20 }, (_, w) => Math.abs(mean(f16.slice(10 * w, 10 * w + 10)) - mean(f32.slice(10 * w, 10 * w + 10))) / mean(f32.slice(10 * w, 10 * w + 10)));
    console.log(`f16 against f32: worst ${Math.max(...relative).toExponential(2)} per iteration, ${Math.max(...windows).toExponential(2)} per window of 10`);
    expect(Math.max(...relative)).toBeLessThanOrEqual(0.02);
  }, 900_000);

  it('skips forced overflow steps on the GPU (initial scale 2^40) as the cpu backend does: parameters and moments unchanged, the scale halved, grown again after 2 good steps', async () => {
    /** nanoGPT's small case under autocast f16 on one batch: each step's skipped flag and scale. */
    async function run(backend: BackendName, steps: number, onStep?: (skipped: boolean, before: number[][], after: number[][]) => void) {
      const { model, optimizer } = fresh();
      const step = compileTrainStep(model, optimizer, { backend, gradClip: 1, autocast: 'f16', scaler: new GradScaler({ initScale: 2 ** 40, growthInterval: 2 }) });
      const state = async () => {
        await step.sync();
        const tensors = [...model.namedParameters().flatMap(([name, p]) => [p as Tensor, optimizer.stateOf(name).expAvg, optimizer.stateOf(name).expAvgSq])];
        return tensors.map((t) => Array.from(t.readHost()!.data));
      };
      const [skipped, scales] = [[] as number[], [] as number[]];
      for (let k = 0; k < steps; k++) {
        const check = onStep && k < steps - 1;
        const before = check ? await state() : [];
        const r = await step(...batch(0));
        skipped.push((await r.skipped!.data())[0]);
        scales.push((await r.scale!.data())[0]);
        if (check) onStep(skipped[k] === 1, before, await state());
      }
      // On the GPU the step count stays there after the last step, until sync().
      if (backend === 'webgpu') expect(() => optimizer.stepCount).toThrow(/KILN_E011 AdamW: the step count lives on the GPU after a compiled training step; call await step.sync\(\) first/);
      await step.sync();
      return { skipped, scales, steps: optimizer.stepCount };
    }
    const steps = 28;
    let checked = 0;
    const gpu = await run('webgpu', steps, (skipped, before, after) => {
      if (skipped) expect(after).toEqual(before), checked++;
      else expect(after).not.toEqual(before);
    });
    const cpu = await run('cpu', steps);
    console.log(`skipped ${gpu.skipped.join('')}, scales 2^${gpu.scales.map(Math.log2).join(', 2^')}`);
    // The GPU's overflow decisions are the cpu's (f16 gradients overflow below 2^19 times the loss by a wide margin either way).
    expect(gpu.skipped).toEqual(cpu.skipped);
    expect(gpu.scales).toEqual(cpu.scales);
    const first = gpu.skipped.indexOf(0);
    expect(first).toBeGreaterThan(10);
    expect(gpu.scales.slice(0, first)).toEqual(gpu.scales.slice(0, first).map((_, k) => 2 ** (39 - k)));
    // After two good steps the scale doubles (growth_interval 2).
    expect(gpu.scales[first + 1]).toBe(2 * gpu.scales[first]);
    expect(checked).toBe(gpu.skipped.slice(0, -1).filter((s) => s === 1).length);
    expect(gpu.steps).toBe(gpu.skipped.filter((s) => s === 0).length);
  }, 300_000);
});
