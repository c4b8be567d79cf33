// kiln's error catalog, shared by errors.test.ts (the codes met without a GPU) and errors.gpu.test.ts
// (E008 to E010, met on a WebGPU device): what the user did, per code, and the helpers that check the
// one line they read.

import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';
import { type ErrorCode, KilnError } from '../ir/errors.ts';

/** What the user did, per code: the test names. Typed by ErrorCode, so a new code needs a line here. */
export const CATALOG: Record<ErrorCode, string> = {
  KILN_E001: 'a view to a shape of another size, traced by compile()',
  KILN_E002: 'masked_fill with a float mask, traced by compile()',
  KILN_E003: "a branch on a tensor's value in forward(), traced by compile()",
  KILN_E004: 'IR text that names an op kiln does not have (a typo)',
  KILN_E005: 'a PyTorch .pt zip given where a safetensors checkpoint belongs',
  KILN_E006: 'a checkpoint of 2 layers loaded into a model configured with 1',
  KILN_E007: 'kiln run on a machine where Vulkan finds neither a GPU nor SwiftShader',
  KILN_E008: 'a compiled model run again after its device was destroyed',
  KILN_E009: 'a forward whose intermediate tensor is larger than any GPU buffer',
  KILN_E010: 'a kernel that stores into a read-only buffer (only a kiln bug makes one)',
  KILN_E011: 'kiln run with nanoGPT configured with dropout 1',
  KILN_E012: 'hand-edited IR text whose recorded type the op does not give',
  KILN_E013: 'IR text with an unclosed shape',
  KILN_E014: "kiln eval with an inputs file that has none of forward()'s inputs",
  KILN_E015: 'kiln run --batch 0',
  KILN_E016: 'kiln run on a model file with a syntax error',
  KILN_E017: 'kiln eval with --out naming its own --weights file',
  KILN_E019: 'kiln eval with --out in a folder that does not exist',
  KILN_E020: "kiln run on nanoGPT configured with n_embd 15 and n_head 2 (the model's own Error)",
  KILN_E021: 'a model made f16 with .half(), run on SwiftShader (no shader-f16)',
};

export const ROOT = new URL('..', import.meta.url).pathname;
const KILN = join(ROOT, 'bin/kiln.mjs');
export const NANOGPT = 'examples/nanogpt/model.ts';
export const TINY = '{"n_layer":1,"n_head":1,"n_embd":8,"block_size":8,"vocab_size":11}';
export const FIXTURE_WEIGHTS = 'test/fixtures/shared_b2_t24.weights.safetensors';
export const FIXTURE_EXPECTED = 'test/fixtures/shared_b2_t24.expected.safetensors';

/** The KilnError a call throws or rejects with, checked to carry `code` and to be one line. */
export async function caught(code: ErrorCode, run: () => unknown): Promise<string> {
  let error: unknown = null;
  try {
    await run();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(KilnError);
  const e = error as KilnError;
  expect(e.code).toBe(code);
  expect(e.message.split('\n')).toHaveLength(1);
  return e.message;
}

/** Runs bin/kiln.mjs as a user would; returns its exit status and the lines kiln itself wrote to stderr. */
export async function kiln(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ code: number; errors: string[] }> {
  const result = await promisify(execFile)('node', [KILN, ...args], { cwd: options.cwd ?? ROOT, env: { ...process.env, ...options.env }, timeout: 120_000 }).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  // Dawn writes its own warnings to stderr from native code; kiln's lines are the coded ones.
  return { code: result.code, errors: result.stderr.split('\n').filter((l) => /^(KILN_E|error)/.test(l)) };
}

/** `file:line:col` of the first line of a source file holding `text`, the column at `text`'s `at`-th character. */
export function locOf(file: string, text: string, at = 0): string {
  const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
  const line = lines.findIndex((l) => l.includes(text));
  expect(line).toBeGreaterThanOrEqual(0);
  return `${file}:${line + 1}:${lines[line].indexOf(text) + at + 1}`;
}
