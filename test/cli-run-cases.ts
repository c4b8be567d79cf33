// `kiln run`, the README's main job, on one device: shared by cli-run.test.ts (cpu) and cli-run.gpu.test.ts (webgpu).

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

export const run = promisify(execFile);
export const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
export const CONFIG = '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96}';

/** Compile, summarize the IR per stage, run, print loss and time, on `device`. */
export function runsNanoGPT(device: string): void {
  it(`compiles nanoGPT, prints each stage's IR summary, the loss and the time, on ${device}`, async () => {
    const { stdout } = await run('node', [KILN, 'run', 'examples/nanogpt/model.ts', '--config', CONFIG, '--batch', '2', '--seq', '24', '--iters', '2', '--device', device], { timeout: 120_000 });
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^model: examples\/nanogpt\/model\.ts {2}0\.03M parameters {2}input \[2,24\] {2}device /);
    for (const stage of ['traced', 'canonical', 'fused', 'lowered']) expect(stdout).toMatch(new RegExp(`^ {2}${stage} +\\d+ nodes: `, 'm'));
    expect(stdout).toMatch(/^ {2}fused +.*2 fused_attention/m);
    expect(stdout).toMatch(/^compile: \d+ ms \(trace, passes, codegen\)$/m);
    // Random tokens over 96 classes from a fresh seeded init: the loss sits near ln(96) = 4.56.
    const loss = Number(/^loss: ([\d.]+)$/m.exec(stdout)?.[1]);
    expect(Math.abs(loss - Math.log(96))).toBeLessThan(0.2);
    expect(stdout).toMatch(/^forward: median [\d.]+ ms over 2 runs/m);
  });
}
