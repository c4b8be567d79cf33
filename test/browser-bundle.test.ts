// What `kiln serve examples/browser` gives the page, checked without a browser: a bundle with nothing
// Node-only in it, and the fixture checkpoint. The page itself, in Chromium: browser.gpu.test.ts.

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, nodeOnlyImports, startServer } from '../compiler/cli/serve.ts';
import { FIXTURE_WEIGHTS } from './helpers.ts';

describe('kiln serve examples/browser', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer('examples/browser', 0);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('bundles the page with nothing Node-only (no webgpu package, no ts-morph, no static node: import)', async () => {
    const { metafile, map } = await server.bundle();
    expect(nodeOnlyImports(metafile)).toEqual([]);
    expect(Object.keys(metafile.inputs)).toContain('index.ts');
    expect(JSON.parse(map).sources.length).toBeGreaterThan(10);
  });

  it('ships the fixture checkpoint unchanged', () => {
    expect(readFileSync('examples/browser/checkpoint.safetensors').equals(readFileSync(FIXTURE_WEIGHTS))).toBe(true);
  });
});
