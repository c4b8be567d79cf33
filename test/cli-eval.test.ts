// `kiln eval` is a contract outside checks call: run the real CLI as a user would, on the PyTorch fixture.

import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { FIXTURE_EXPECTED, FIXTURE_WEIGHTS, loadFixture, relError } from './helpers.ts';

const run = promisify(execFile);
const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
const MODEL = new URL('../examples/nanogpt/model.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'kiln-eval-'));

async function kiln(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('node', [KILN, ...args], { timeout: 300_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

// Fixture tolerance: logits and loss within 1e-4 relative (shared/fixtures/README.md).
describe('kiln eval', () => {
  const cases: [string, string, string, string][] = [
    ['cpu', 'compiled', '{"flash":false}', 'manual attention'],
    ['cpu', 'eager', '{"flash":true}', 'sdpa'],
    ['webgpu', 'compiled', '{"flash":false}', 'manual attention'],
    ['webgpu', 'eager', '{"flash":true,"sdpa_mask":true}', 'sdpa with a mask'],
  ];
  for (const [device, mode, config, label] of cases) {
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

  for (const [device, mode] of [['cpu', 'compiled'], ['webgpu', 'compiled'], ['cpu', 'eager'], ['webgpu', 'eager']]) {
    it(`writes grad.<param> for every parameter with --grads, matching PyTorch within 1e-3, ${mode} on ${device}`, async () => {
      const out = join(dir, `grads-${device}-${mode}.safetensors`);
      const r = await kiln('eval', MODEL, '--weights', FIXTURE_WEIGHTS, '--inputs', FIXTURE_EXPECTED, '--out', out, '--outputs', 'loss', '--device', device, '--mode', mode, '--config', '{"flash":false}', '--grads');
      expect(r.stderr.split('\n').filter((l) => l.startsWith('KILN_E') || l.startsWith('error'))).toEqual([]);
      expect(r.code).toBe(0);
      const got = (await readCheckpoint(out)).tensors;
      const { expected } = await loadFixture();
      const names = [...expected.keys()].filter((k) => k.startsWith('grad.'));
      expect([...got.keys()].filter((k) => k.startsWith('grad.')).sort()).toEqual(names.sort());
      // Gradient tolerance of the fixtures' README: 1e-3 relative.
      for (const k of names) expect(relError(got.get(k)!.data, expected.get(k)!.data), k).toBeLessThan(1e-3);
    });
  }

  const bad: [string, string[], RegExp][] = [
    ['a missing weights file', ['--weights', join(dir, 'nope.safetensors')], /^KILN_E005 .*nope\.safetensors/],
    ['an unknown flag', ['--frobnicate', '1'], /^KILN_E015 kiln eval: unknown flag --frobnicate/],
    ['a bad --device', ['--device', 'tpu'], /^KILN_E015 .*--device must be one of webgpu, cpu/],
    ['an output forward() does not return', ['--outputs', 'logits,perplexity'], /^KILN_E014 forward\(\) returned no tensor "perplexity"/],
    ['a config that does not fit the weights', ['--config', '{"n_embd":64}'], /^KILN_E006 .*transformer\.wte\.weight/],
    ['a --config that is not JSON', ['--config', '{flash:false'], /^KILN_E015 .*--config must be a JSON object/],
  ];
  for (const [label, override, pattern] of bad) {
    it(`exits non-zero with a one-line error for ${label}`, async () => {
      const base: Record<string, string> = { '--weights': FIXTURE_WEIGHTS, '--inputs': FIXTURE_EXPECTED, '--out': join(dir, 'bad.safetensors'), '--outputs': 'logits,loss', '--device': 'cpu' };
      const args = ['eval', MODEL];
      for (let i = 0; i < override.length; i += 2) if (override[i] in base) base[override[i]] = override[i + 1];
      for (const [k, v] of Object.entries(base)) args.push(k, v);
      for (let i = 0; i < override.length; i += 2) if (!(override[i] in { '--weights': 1, '--inputs': 1, '--out': 1, '--outputs': 1, '--device': 1 })) args.push(override[i], override[i + 1]);
      const r = await kiln(...args);
      expect(r.code).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(pattern);
    });
  }
});
