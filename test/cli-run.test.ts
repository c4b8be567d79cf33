// `kiln run`, the README's main job: compile, summarize the IR per stage, run, print loss and time.
// On the cpu here; on webgpu, and the two against each other: cli-run.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { CONFIG, KILN, run, runsNanoGPT } from './cli-run-cases.ts';

describe('kiln run', () => {
  runsNanoGPT('cpu');

  it('runs nanoGPT under autocast with --dtype float16, casts in the fused stage, the loss as in f32 to the f16 rounding', async () => {
    const runWith = (...flags: string[]) => run('node', [KILN, 'run', 'examples/nanogpt/model.ts', '--config', CONFIG, '--batch', '2', '--seq', '24', '--iters', '1', '--device', 'cpu', ...flags], { timeout: 120_000 });
    const [mixed, plain] = [(await runWith('--dtype', 'float16')).stdout, (await runWith()).stdout];
    expect(mixed).toMatch(/^model: .* device cpu {2}autocast f16$/m);
    expect(mixed).toMatch(/^ {2}fused +\d+ nodes: (\d+ param, )?\d+ cast, /m); // 27 casts after hoist_casts, second to the 28 params
    const loss = (out: string) => Number(/^loss: ([\d.]+)$/m.exec(out)?.[1]);
    // The loss is a mean of f32 cross-entropies of f16 logits within 31 u of the f32 ones' scale
    // (test/autocast.test.ts). A row's cross-entropy moves by at most 2 max |logit change| (its gradient in
    // the logits has L1 norm <= 2), and a fresh init's logits are below 1 in magnitude (the loss sits at
    // ln 96): within 2 x 31 u ~ 0.03 of the f32 loss.
    expect(Math.abs(loss(mixed) - loss(plain))).toBeLessThan(2 * 31 * 2 ** -11);
  });
});
