// What `kiln serve examples/browser` gives the page, checked without a browser: a bundle with nothing
// Node-only in it, its source map, and the trained checkpoint. The page itself, in Chromium: browser.gpu.test.ts.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Plugin, build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, nodeOnlyImports, startServer } from '../compiler/cli/serve.ts';
import { SourceMap } from '../examples/browser/sourcemap.ts';
import { parseSafetensors } from '../runtime/safetensors.ts';

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

  it('ships the trained Shakespeare checkpoint: F16 weights under 2 MiB, with its config and characters', () => {
    const bytes = readFileSync('examples/browser/checkpoint.safetensors');
    expect(bytes.length).toBeLessThan(2 * 1024 * 1024);
    const file = parseSafetensors(new Uint8Array(bytes), 'checkpoint.safetensors');
    expect(JSON.parse(file.metadata.config).vocab_size).toBe(65);
    expect(JSON.parse(file.metadata.chars)).toHaveLength(65);
    expect(new Set([...file.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F16']));
  });

  it('serves the source map the page maps kiln explain locations through (original sources and their text)', async () => {
    const map = JSON.parse((await server.bundle()).map) as { sources: string[]; sourcesContent: string[] };
    const model = map.sources.indexOf('../nanogpt/model.ts');
    expect(model).toBeGreaterThanOrEqual(0);
    expect(map.sourcesContent[model]).toContain('class CausalSelfAttention');
    const res = await fetch(`${server.url}main.js.map`);
    expect(res.status).toBe(200);
    expect((await res.json()).sources).toEqual(map.sources);
  });

  it("maps a bundle position back to model.ts's line with the page's VLQ decoder (examples/browser/sourcemap.ts)", async () => {
    const { js, map } = await server.bundle();
    const lines = js.split('\n');
    const line = lines.findIndex((l) => l.includes('scaledDotProductAttention(') && l.includes('isCausal: true'));
    expect(line).toBeGreaterThan(0);
    const col = lines[line].indexOf('scaledDotProductAttention');
    const decoded = new SourceMap(JSON.parse(map), '/kiln/examples/browser/');
    const original = decoded.original(line + 1, col + 1)!;
    expect(original.file).toBe('/kiln/examples/nanogpt/model.ts');
    const source = readFileSync('examples/nanogpt/model.ts', 'utf-8').split('\n');
    expect(source[original.line - 1]).toMatch(/scaledDotProductAttention\(q, k, v, .*isCausal: true/);
    expect(decoded.sourceLine(original.file, original.line)).toBe(source[original.line - 1].trim());
  });
});

// The npm package's browser build (bin/build.mjs): index.browser.ts with runtime/node-only.ts swapped for
// node-only.browser.ts. Bundled here as a user's bundler would, platform browser and no externals (the
// packed package itself: package.test.ts).
describe("kiln's browser entry", () => {
  const root = resolve(import.meta.dirname, '..');
  const browserOptions = { bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, logLevel: 'silent' } as const;

  it('reaches Node (the file system, Dawn) only through runtime/node-only.ts', async () => {
    const failure = await build({ ...browserOptions, entryPoints: [join(root, 'index.ts')] }).then(() => null, (e: { errors: { location: { file: string } | null }[] }) => e);
    const files = new Set(failure?.errors.map((e) => e.location?.file));
    expect(files).toContain('runtime/node-only.ts');
    expect([...files].filter((f) => f !== 'runtime/node-only.ts' && !f?.startsWith('node_modules/webgpu/'))).toEqual([]);
  });

  it('bundles with no Node module once node-only.ts is swapped, as bin/build.mjs does', async () => {
    const swap: Plugin = {
      name: 'node-only',
      setup(b) {
        b.onResolve({ filter: /node-only\.ts$/ }, (args) =>
          resolve(args.resolveDir, args.path) === join(root, 'runtime/node-only.ts') ? { path: join(root, 'runtime/node-only.browser.ts') } : undefined,
        );
      },
    };
    const { metafile, outputFiles } = await build({ ...browserOptions, entryPoints: [join(root, 'index.browser.ts')], outfile: 'out.js', plugins: [swap] });
    const inputs = Object.keys(metafile.inputs);
    expect(inputs).toContain('runtime/node-only.browser.ts');
    expect(inputs.filter((f) => f === 'runtime/node-only.ts' || f.startsWith('node_modules/webgpu/'))).toEqual([]);
    expect(outputFiles[0].text).not.toMatch(/(from|import\()\s*["'](node:|webgpu)/);
  });
});
