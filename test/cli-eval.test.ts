// `kiln eval` is a contract outside checks call: run the real CLI as a user would, on the PyTorch fixture.
// On the cpu here, with every refusal; on webgpu: cli-eval.gpu.test.ts.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MODEL, dir, evalMatchesPyTorch, gradsMatchPyTorch, kiln } from './cli-eval-cases.ts';
import { FIXTURE_EXPECTED, FIXTURE_WEIGHTS } from './helpers.ts';

describe('kiln eval', () => {
  evalMatchesPyTorch('cpu', 'compiled', '{"flash":false}', 'manual attention');
  evalMatchesPyTorch('cpu', 'eager', '{"flash":true}', 'sdpa');
  gradsMatchPyTorch('cpu', 'compiled');
  gradsMatchPyTorch('cpu', 'eager');

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
