// The compiled training step on webgpu against the host path (the cpu: train-step.test.ts), and
// train.ts's --dtype on a device without shader-f16 (SwiftShader; f16 training on lavapipe: amp.gpu.test.ts).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { main as train } from '../examples/nanogpt/train.ts';
import { getDevice, releaseDevice } from '../runtime/webgpu/index.ts';
import { matchesHostPath } from './train-step-cases.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-train-step-'));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await releaseDevice();
});

describe('compileTrainStep', () => {
  matchesHostPath('webgpu');
});

const deviceHasF16 = (await getDevice()).f16;

describe.skipIf(deviceHasF16)('train.ts --dtype on a WebGPU device without shader-f16', () => {
  const tiny = ['--device', 'webgpu', '--n_layer', '1', '--n_head', '2', '--n_embd', '16', '--block_size', '16', '--batch_size', '2', '--eval_iters', '1', '--max_iters', '0', '--out_dir', dir];
  const quiet = () => undefined;

  it('refuses --dtype float16 with KILN_E021 (no silent f32), and trains in float32 when --dtype is left at auto', async () => {
    await expect(train([...tiny, '--dtype', 'float16'], quiet)).rejects.toThrow(/KILN_E021 --dtype float16 needs a WebGPU device with shader-f16, and this one has none; use --dtype float32/);
    expect((await train(tiny, quiet)).dtype).toBe('float32');
  });
});
