// `kiln run`, the README's main job: compile, summarize the IR per stage, run, print loss and time.
// On the cpu here; on webgpu, and the two against each other: cli-run.gpu.test.ts.

import { describe } from 'vitest';
import { runsNanoGPT } from './cli-run-cases.ts';

describe('kiln run', () => {
  runsNanoGPT('cpu');
});
