// `kiln eval` is a contract outside checks call: run the real CLI as a user would, on the PyTorch fixture.
// On the cpu here, with every refusal; on webgpu: cli-eval.gpu.test.ts.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { MODEL, dir, evalMatchesPyTorch, gradsMatchPyTorch, kiln } from './cli-eval-cases.ts';
import { FIXTURE_EXPECTED, FIXTURE_WEIGHTS, loadFixture, relError } from './helpers.ts';

describe('kiln eval', () => {
  evalMatchesPyTorch('cpu', 'compiled', '{"flash":false}', 'manual attention');
  evalMatchesPyTorch('cpu', 'eager', '{"flash":true}', 'sdpa');
  gradsMatchPyTorch('cpu', 'compiled');
  gradsMatchPyTorch('cpu', 'eager');

  // --dtype float16 is autocast f16. Against PyTorch's f32 outputs: the logits' deepest path meets 31 f16
  // roundings (test/autocast.test.ts counts them), each adding at most u = 2^-11 to first order: 31 u.
  // A gradient goes back along that path through the backward's f16 matmuls (the incoming gradient cast
  // to f16, the product rounded): twice the roundings, 62 u. Measured: logits 8.0e-4 compiled, 6.8e-4
  // eager; gradients 1.4e-3 at worst (ln_1's weight), the loss 4e-6.
  for (const mode of ['compiled', 'eager']) {
    it(`with --dtype float16 writes autocast outputs and gradients within the f16 rounding bound of PyTorch's, ${mode} on cpu`, async () => {
      const U = 2 ** -11;
      const out = join(dir, `f16-${mode}.safetensors`);
      const r = await kiln('eval', MODEL, '--weights', FIXTURE_WEIGHTS, '--inputs', FIXTURE_EXPECTED, '--out', out, '--outputs', 'logits,loss', '--device', 'cpu', '--mode', mode, '--config', '{"flash":false}', '--dtype', 'float16', '--grads');
      expect(r.stderr.split('\n').filter((l) => l.startsWith('KILN_E'))).toEqual([]);
      const got = (await readCheckpoint(out)).tensors;
      const { expected } = await loadFixture();
      const logitsErr = relError(got.get('logits')!.data, expected.get('logits')!.data);
      expect(logitsErr).toBeLessThanOrEqual(31 * U);
      expect(logitsErr).toBeGreaterThan(1e-5); // f32 would agree to 1e-6: the f16 rounding happened
      expect(relError(got.get('loss')!.data, expected.get('loss')!.data)).toBeLessThanOrEqual(31 * U);
      const grads = [...expected.keys()].filter((k) => k.startsWith('grad.'));
      for (const k of grads) expect(relError(got.get(k)!.data, expected.get(k)!.data), k).toBeLessThanOrEqual(62 * U);
    });
  }

  const bad: [string, string[], RegExp][] = [
    ['a missing weights file', ['--weights', join(dir, 'nope.safetensors')], /^KILN_E005 .*nope\.safetensors/],
    ['an unknown flag', ['--frobnicate', '1'], /^KILN_E015 kiln eval: unknown flag --frobnicate/],
    ['a bad --device', ['--device', 'tpu'], /^KILN_E015 .*--device must be one of webgpu, cpu/],
    ['an output forward() does not return', ['--outputs', 'logits,perplexity'], /^KILN_E014 forward\(\) returned no tensor "perplexity"/],
    ['a config that does not fit the weights', ['--config', '{"n_embd":64}'], /^KILN_E006 .*transformer\.wte\.weight/],
    ['a --config that is not JSON', ['--config', '{flash:false'], /^KILN_E015 .*--config must be a JSON object/],
    ['--dtype bfloat16', ['--dtype', 'bfloat16'], /^KILN_E015 kiln eval: --dtype bfloat16: kiln has no bf16 compute on WebGPU yet/],
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
