// `kiln eval` on the webgpu device against the PyTorch fixture (the cpu and the refusals: cli-eval.test.ts).

import { describe } from 'vitest';
import { evalMatchesPyTorch, gradsMatchPyTorch } from './cli-eval-cases.ts';

describe('kiln eval', () => {
  evalMatchesPyTorch('webgpu', 'compiled', '{"flash":false}', 'manual attention');
  evalMatchesPyTorch('webgpu', 'eager', '{"flash":true,"sdpa_mask":true}', 'sdpa with a mask');
  gradsMatchPyTorch('webgpu', 'compiled');
  gradsMatchPyTorch('webgpu', 'eager');
});
