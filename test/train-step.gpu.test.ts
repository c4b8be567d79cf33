// The compiled training step on webgpu against the host path (the cpu: train-step.test.ts).

import { afterAll, describe } from 'vitest';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { matchesHostPath } from './train-step-cases.ts';

afterAll(() => releaseDevice());

describe('compileTrainStep', () => {
  matchesHostPath('webgpu');
});
