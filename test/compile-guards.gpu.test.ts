// Compiled code is never stale, on the webgpu backend (SwiftShader in CI): see guard-cases.ts.
import { afterAll } from 'vitest';
import { useBackend } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { guardCases } from './guard-cases.ts';
import { guardProperty } from './guard-properties.ts';

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

guardCases('webgpu');
guardProperty(['cpu', 'webgpu'], 12);
