// Ctrl-C or SIGTERM during `npm run train`: one line naming the iteration and the last checkpoint,
// status 130 or 143, no stack trace; a signal during a checkpoint save waits for the save.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { TrainingInterrupts } from '../examples/nanogpt/interrupt.ts';
import { readSafetensors } from '../runtime/safetensors.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

// 1 layer, 16 wide: a few milliseconds an iteration on the CPU interpreter; a checkpoint every 5.
const TINY = ['--device', 'cpu', '--n_layer', '1', '--n_head', '1', '--n_embd', '16', '--block_size', '16', '--batch_size', '4',
  '--max_iters', '1000000', '--eval_interval', '5', '--eval_iters', '2', '--log_interval', '1', '--always_save_checkpoint', 'true'];

/** Runs train.ts until it has logged iteration `after`, sends `signal`, and returns what it left. */
async function interruptedRun(signal: 'SIGINT' | 'SIGTERM', after: number) {
  const outDir = mkdtempSync(join(tmpdir(), 'kiln-interrupt-'));
  dirs.push(outDir);
  const child = spawn(process.execPath, [join(ROOT, 'bin/run-ts.mjs'), 'examples/nanogpt/train.ts', ...TINY, '--out_dir', outDir], { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => void (stderr += d));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d;
    if (stdout.includes(`iter ${after}:`)) child.kill(signal);
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  return { code, stdout, stderr, outDir };
}

describe('train.ts interrupted', () => {
  for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    it(`exits ${status} on ${signal} with one line naming the iteration and the last checkpoint, which is whole`, async () => {
      const run = await interruptedRun(signal, 12);
      expect(run.code, run.stderr).toBe(status);
      const lines = run.stderr.split('\n').filter(Boolean);
      expect(lines).toHaveLength(1);
      const ckpt = join(run.outDir, 'ckpt.safetensors');
      const m = new RegExp(`^kiln train: interrupted \\(${signal}\\) at iter (\\d+); last checkpoint: (.+) \\(iter (\\d+)\\)$`).exec(lines[0]);
      expect(m, lines[0]).not.toBeNull();
      const [iter, path, saved] = [Number(m![1]), m![2], Number(m![3])];
      expect(iter).toBeGreaterThanOrEqual(12);
      expect(path).toBe(ckpt);
      expect(saved % 5).toBe(0); // the checkpoint of the last eval that finished, at most one eval back
      expect(iter - saved).toBeGreaterThanOrEqual(0);
      expect(iter - saved).toBeLessThanOrEqual(5);
      expect((await readSafetensors(ckpt)).metadata.iter_num).toBe(String(saved));
      expect(readdirSync(run.outDir).sort()).toEqual(['ckpt.safetensors', 'loss.svg']);
    }, 120_000);
  }
});

describe('TrainingInterrupts', () => {
  type Harness = { interrupts: TrainingInterrupts; signal: (s: NodeJS.Signals) => void; lines: () => unknown[]; exits: () => unknown[][] };

  /** Runs `test` with a new TrainingInterrupts whose listener is called directly (emitting would reach vitest's own), exit and stderr mocked. */
  async function withInterrupts(test: (h: Harness) => Promise<void> | void): Promise<void> {
    const before = new Set(process.listeners('SIGINT'));
    const interrupts = new TrainingInterrupts();
    const signal = process.listeners('SIGINT').find((l) => !before.has(l))! as (s: NodeJS.Signals) => void;
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await test({ interrupts, signal, lines: () => write.mock.calls.map((c) => c[0]), exits: () => exit.mock.calls });
    } finally {
      [exit, write].forEach((s) => s.mockRestore());
      interrupts.dispose();
    }
  }

  it('holds a signal that arrives during a save until the save has finished, then exits with its one line', () =>
    withInterrupts(async ({ interrupts, signal, lines, exits }) => {
      interrupts.iter = 40;
      let finish!: () => void;
      const save = interrupts.saving(() => new Promise<void>((r) => (finish = r)).then(() => void (interrupts.checkpoint = { path: 'out/ckpt.safetensors', iter: 40 })));
      signal('SIGTERM');
      signal('SIGINT'); // a second signal during the save changes nothing
      expect(exits()).toEqual([]);
      finish();
      await save;
      expect(lines()).toEqual(['kiln train: interrupted (SIGTERM) at iter 40; last checkpoint: out/ckpt.safetensors (iter 40)\n']);
      expect(exits()).toEqual([[143]]);
    }));

  it('stops at once outside a save, and says when no checkpoint was written', () =>
    withInterrupts(({ interrupts, signal, lines, exits }) => {
      interrupts.iter = 3;
      signal('SIGINT');
      expect(lines()).toEqual(['kiln train: interrupted (SIGINT) at iter 3; no checkpoint written\n']);
      expect(exits()).toEqual([[130]]);
    }));

  it('removes its listeners on dispose', () => {
    const count = process.listenerCount('SIGINT') + process.listenerCount('SIGTERM');
    new TrainingInterrupts().dispose();
    expect(process.listenerCount('SIGINT') + process.listenerCount('SIGTERM')).toBe(count);
  });
});
