// `kiln eval` against the PyTorch fixture, one device at a time: shared by cli-eval.test.ts (cpu, and
// the refusals) and cli-eval.gpu.test.ts (webgpu). The real CLI, run as a user would.

import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { FIXTURE_EXPECTED, FIXTURE_WEIGHTS, loadFixture, relError } from './helpers.ts';

const run = promisify(execFile);
const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
export const MODEL = new URL('../examples/nanogpt/model.ts', import.meta.url).pathname;
export const dir = mkdtempSync(join(tmpdir(), 'kiln-eval-'));

export async function kiln(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('node', [KILN, ...args], { timeout: 300_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** Fixture tolerance: logits and loss within 1e-4 relative (shared/fixtures/README.md). */
export function evalMatchesPyTorch(device: string, mode: string, config: string, label: string): void {
  it(`writes logits and loss matching PyTorch on ${device}, ${mode}, ${label}`, async () => {
    const out = join(dir, `${device}-${mode}.safetensors`);
    const r = await kiln('eval', MODEL, '--weights', FIXTURE_WEIGHTS, '--inputs', FIXTURE_EXPECTED, '--out', out, '--outputs', 'logits,loss', '--device', device, '--mode', mode, '--config', config);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('KILN_E') || l.startsWith('error'))).toEqual([]);
    expect(r.code).toBe(0);
    const got = (await readCheckpoint(out)).tensors;
    const { expected } = await loadFixture();
    expect([...got.keys()]).toEqual(['logits', 'loss']);
    expect(got.get('logits')!.type.shape).toEqual([2, 24, 96]);
    expect(got.get('loss')!.type.shape).toEqual([1]);
    expect(relError(got.get('logits')!.data, expected.get('logits')!.data)).toBeLessThan(1e-4);
    expect(relError(got.get('loss')!.data, expected.get('loss')!.data)).toBeLessThan(1e-4);
  });
}

/** Gradient tolerance of the fixtures' README: 1e-3 relative. */
export function gradsMatchPyTorch(device: string, mode: string): void {
  it(`writes grad.<param> for every parameter with --grads, matching PyTorch within 1e-3, ${mode} on ${device}`, async () => {
    const out = join(dir, `grads-${device}-${mode}.safetensors`);
    const r = await kiln('eval', MODEL, '--weights', FIXTURE_WEIGHTS, '--inputs', FIXTURE_EXPECTED, '--out', out, '--outputs', 'loss', '--device', device, '--mode', mode, '--config', '{"flash":false}', '--grads');
    expect(r.stderr.split('\n').filter((l) => l.startsWith('KILN_E') || l.startsWith('error'))).toEqual([]);
    expect(r.code).toBe(0);
    const got = (await readCheckpoint(out)).tensors;
    const { expected } = await loadFixture();
    const names = [...expected.keys()].filter((k) => k.startsWith('grad.'));
    expect([...got.keys()].filter((k) => k.startsWith('grad.')).sort()).toEqual(names.sort());
    for (const k of names) expect(relError(got.get(k)!.data, expected.get(k)!.data), k).toBeLessThan(1e-3);
  });
}
