// `kiln run` on the webgpu device, and the same loss as on the cpu (cli-run.test.ts runs the cpu alone).

import { describe, expect, it } from 'vitest';
import { CONFIG, KILN, run, runsNanoGPT } from './cli-run-cases.ts';

describe('kiln run', () => {
  runsNanoGPT('webgpu');

  it('gives the same loss on cpu and webgpu (seeded init and inputs)', async () => {
    const loss = async (device: string) => {
      const { stdout } = await run('node', [KILN, 'run', 'examples/nanogpt/model.ts', '--config', CONFIG, '--iters', '1', '--device', device], { timeout: 120_000 });
      return Number(/^loss: ([\d.]+)$/m.exec(stdout)?.[1]);
    };
    const [cpu, gpu] = await Promise.all([loss('cpu'), loss('webgpu')]);
    expect(Math.abs(cpu - gpu)).toBeLessThanOrEqual(1e-4); // printed to 4 decimals
  });
});
