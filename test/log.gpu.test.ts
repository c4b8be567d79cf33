// KILN_LOG's kernels channel: one line per kernel when the webgpu backend prepares a program.

import { afterAll, describe, expect, it } from 'vitest';
import { compile, tensor } from '../index.ts';
import { setLogChannels } from '../ir/log.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { capturedStderr, softmaxModel } from './log-capture.ts';

afterAll(releaseDevice);

const lines = capturedStderr();

describe('compile() logs what it decides', () => {
  it('logs one kernels line per kernel when the webgpu backend prepares a program', async () => {
    setLogChannels('kernels');
    await compile(softmaxModel(), { backend: 'webgpu' }).lower(tensor([1, 2, 3, 4], [2, 2]));
    // The grid is codegen's choice: the line's shape is what is pinned here.
    const shapes = lines.map((l) => l.replace(/test\/log-capture\.ts:\d+:\d+/, 'LOC').replace(/workgroups=\d+x\d+x\d+/, 'workgroups=X'));
    expect(shapes).toEqual([
      '[kiln:kernels] %1 mul LOC workgroups=X reads=%0 pipeline=0',
      '[kiln:kernels] %2 softmax LOC workgroups=X reads=%1 pipeline=1',
      '[kiln:kernels] %3 sum LOC workgroups=X reads=%2 pipeline=2',
    ]);
  });
});
