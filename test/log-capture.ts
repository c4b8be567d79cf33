// What KILN_LOG writes, captured per test: shared by log.test.ts and log.gpu.test.ts.

import { afterEach, beforeEach, vi } from 'vitest';
import { F, Module, type Tensor } from '../index.ts';
import { setLogChannels } from '../ir/log.ts';

/** The stderr lines of the running test (emptied before each); channels are switched off after each. */
export function capturedStderr(): string[] {
  const lines: string[] = [];
  beforeEach(() => {
    lines.length = 0;
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      return true;
    });
  });
  afterEach(() => {
    vi.restoreAllMocks();
    setLogChannels(undefined);
  });
  return lines;
}

/** softmax(2x).sum(-1): a few nodes for the compile-time channels. */
export function softmaxModel(): Module & { forward: (x: Tensor) => Tensor } {
  return Object.assign(new Module(), { forward: (x: Tensor) => F.softmax(x.mul(2), -1).sum(-1) });
}
