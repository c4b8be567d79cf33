// train.ts and sample.ts at their edges (issue 14, section 5), run as a user runs them (npm run train, that
// is bin/run-ts.mjs): a checkpoint with missing or malformed metadata, resuming with a larger --block_size,
// sizes no array holds, files the system refuses, and an error the model raises. Each is exit status 1 and
// one coded line on stderr, never a stack trace, naming the user's flag or path.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../runtime/safetensors.ts';
import { main as train } from '../examples/nanogpt/train.ts';
import { runNode } from './cli-capture.ts';

const RUN_TS = new URL('../bin/run-ts.mjs', import.meta.url).pathname;
const TRAIN = new URL('../examples/nanogpt/train.ts', import.meta.url).pathname;
const SAMPLE = new URL('../examples/nanogpt/sample.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'kiln-train-edges-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// 1 layer, n_embd 16, block 16, batch 2: an iteration takes milliseconds on the CPU interpreter.
const tiny = ['--device', 'cpu', '--n_layer', '1', '--n_head', '2', '--n_embd', '16', '--block_size', '16', '--batch_size', '2', '--eval_iters', '1', '--log_interval', '1'];
const good = join(dir, 'good');

/** The script's one line on stderr, checked to be that line alone with exit status 1. The timeout fails a hang fast. */
async function refusal(script: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await runNode([RUN_TS, script, ...args], { env, timeout: 60_000 });
  expect(r.code).toBe(1);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0];
}

/** out_dir/ckpt.safetensors: a copy of the good checkpoint with its metadata edited. */
async function checkpointWith(name: string, edit: (metadata: Record<string, string>) => void): Promise<string> {
  const file = await readSafetensors(join(good, 'ckpt.safetensors'));
  const tensors = new Map([...file.tensors].map(([k, t]) => [k, { dtype: t.dtype, shape: [...t.shape], data: t.data }]));
  const metadata = { ...file.metadata };
  edit(metadata);
  const outDir = join(dir, name);
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir);
  await writeSafetensors(join(outDir, 'ckpt.safetensors'), tensors, metadata);
  return outDir;
}

beforeAll(async () => {
  await train([...tiny, '--max_iters', '2', '--eval_interval', '2', '--out_dir', good], () => undefined);
}, 60_000);

describe('resuming from a checkpoint with missing or malformed metadata', () => {
  const cases: [string, (md: Record<string, string>) => void, string][] = [
    ['no iter_num (this looped forever at iteration NaN)', (md) => delete md.iter_num, '__metadata__.iter_num is missing, expected a whole number of iterations (train.ts writes it)'],
    ['an iter_num that is not a count', (md) => (md.iter_num = '2.5'), '__metadata__.iter_num is "2.5", expected a whole number of iterations (train.ts writes it)'],
    ['a best_val_loss that is not a number', (md) => (md.best_val_loss = 'low'), '__metadata__.best_val_loss is "low", expected a number (train.ts writes it)'],
    ['no config', (md) => delete md.config, '__metadata__.config is missing; train.ts writes the model config there'],
    ['a config with a value of the wrong type', (md) => (md.config = md.config.replace('"n_layer":1', '"n_layer":"one"')), '__metadata__.config key "n_layer" must be a number (its default is 12), got "one"'],
  ];
  for (const [label, edit, detail] of cases) {
    it(`exits 1 with one KILN_E005 line naming the file and the field: ${label}`, async () => {
      const outDir = await checkpointWith(label.replace(/\W+/g, '-'), edit);
      const line = await refusal(TRAIN, [...tiny, '--max_iters', '4', '--init_from', 'resume', '--out_dir', outDir]);
      expect(line).toBe(`KILN_E005 bad checkpoint ${join(outDir, 'ckpt.safetensors')}: ${detail}`);
    });
  }

  it('sample.ts refuses a checkpoint whose chars are not a JSON array of characters', async () => {
    const outDir = await checkpointWith('bad-chars', (md) => (md.chars = '{"a":1}'));
    const line = await refusal(SAMPLE, ['--out_dir', outDir]);
    expect(line).toBe(`KILN_E005 bad checkpoint ${join(outDir, 'ckpt.safetensors')}: __metadata__.chars is "{\\"a\\":1}", expected a JSON array of characters (train.ts writes it)`);
  });
});

describe('train.ts and sample.ts print one coded line for every error', () => {
  it('resuming with a --block_size larger than the checkpoint\'s is KILN_E015 naming the flag (a stack trace before)', async () => {
    const outDir = await checkpointWith('resume-block', () => undefined);
    const line = await refusal(TRAIN, [...tiny, '--block_size', '32', '--max_iters', '4', '--init_from', 'resume', '--out_dir', outDir]);
    expect(line).toBe(`KILN_E015 --block_size 32 is larger than the block_size 16 of ${join(outDir, 'ckpt.safetensors')}, which resuming keeps; resume with --block_size 16 or less`);
  });

  it("an error the model raises is KILN_E020 at the model's line; KILN_DEBUG=1 adds the stack trace", async () => {
    const args = [...tiny, '--n_embd', '15', '--max_iters', '1', '--out_dir', join(dir, 'n_embd')];
    expect(await refusal(TRAIN, args)).toMatch(/^KILN_E020 examples\/nanogpt\/model\.ts:\d+: n_embd 15 is not a multiple of n_head 2$/);
    const r = await runNode([RUN_TS, TRAIN, ...args], { env: { KILN_DEBUG: '1' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^KILN_E020 [^\n]*\nError: n_embd 15 is not a multiple of n_head 2\n\s+at /);
  });

  it('an absurd --batch_size is KILN_E015 naming --batch_size and --block_size (RangeError: Invalid typed array length before)', async () => {
    const line = await refusal(TRAIN, [...tiny, '--batch_size', '1000000000', '--max_iters', '1', '--out_dir', join(dir, 'big')]);
    expect(line).toMatch(/^KILN_E015 --batch_size 1000000000 with --block_size 16 makes batches of 16000000000 tokens, more than fit in memory \(.+\)$/);
  });

  it('a --batch_size that is not a positive integer is KILN_E015', async () => {
    expect(await refusal(TRAIN, [...tiny, '--batch_size', '0', '--out_dir', join(dir, 'zero')])).toBe('KILN_E015 --batch_size must be a positive integer, got 0');
  });

  it('an --out_dir under a file is KILN_E019 naming the path and the flag', async () => {
    writeFileSync(join(dir, 'a-file'), '');
    const outDir = join(dir, 'a-file', 'run');
    const line = await refusal(TRAIN, [...tiny, '--max_iters', '1', '--out_dir', outDir]);
    expect(line).toBe(`KILN_E019 ${outDir} (--out_dir): cannot mkdir: not a directory (ENOTDIR); a part of the path is a file, not a folder`);
  });

  it('a --data file that does not exist is KILN_E019 naming the path and the flag', async () => {
    const data = join(dir, 'missing.txt');
    const line = await refusal(TRAIN, [...tiny, '--data', data, '--out_dir', join(dir, 'nodata')]);
    expect(line).toBe(`KILN_E019 ${data} (--data): cannot open: no such file or directory (ENOENT); check that the path and its folder exist`);
  });

  it('sample.ts --start FILE: naming no file is KILN_E019 naming the path and --start', async () => {
    const prompt = join(dir, 'prompt.txt');
    const line = await refusal(SAMPLE, ['--out_dir', good, '--start', `FILE:${prompt}`]);
    expect(line).toBe(`KILN_E019 ${prompt} (--start): cannot open: no such file or directory (ENOENT); check that the path and its folder exist`);
  });
});
