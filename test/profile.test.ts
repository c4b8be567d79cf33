// kiln profile without a GPU: the printout for an adapter timed by the wall clock, and the refusals
// (the profiles themselves run on the adapter: profile.gpu.test.ts).

import { describe, expect, it } from 'vitest';
import { parseArgs } from '../compiler/cli/args.ts';
import { formatProfile, profileCommand } from '../compiler/cli/profile.ts';
import { NANOGPT } from './cli-capture.ts';

describe('kiln profile', () => {
  it('says so when it timed by the wall clock, for adapters without timestamp-query', () => {
    const kernel = { id: '%3', op: 'matmul', loc: 'model.ts:5:9', medianUs: 12, share: 1 };
    const mode = { kernels: [kernel], byOp: { matmul: { us: 12, count: 1 } }, totalUs: 12, kernelMediansUs: 12 };
    const text = formatProfile({ model: 'model.ts', input: [1, 4], adapter: 'some GPU', clock: 'wall-clock', warmup: 1, iters: 3, modes: { compiled: mode } });
    expect(text.split('\n')[1]).toBe(
      'clock: wall clock (this adapter has no timestamp-query): each kernel replayed alone, submit to done, so launch overhead is included; median of 3 forwards after 1 warm-up',
    );
  });

  it('refuses a device other than webgpu', () => {
    expect(() => parseArgs(profileCommand.spec, [NANOGPT, '--device', 'cpu'])).toThrow('KILN_E015 kiln profile: --device must be one of webgpu, got "cpu"; see kiln profile --help');
  });
});
