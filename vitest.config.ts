import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // SwiftShader runs WebGPU on the CPU at ~0.3 GFLOP/s: GPU tests use small shapes but need time.
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
