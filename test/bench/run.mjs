#!/usr/bin/env node
// Runs a benchmark script of this folder: `node test/bench/run.mjs bench|report [ARGS...]` (what
// `npm run bench` and `npm run bench:report` call). kiln has no build step, so esbuild bundles the
// TypeScript into node_modules/.cache/kiln/NAME.mjs, as bin/kiln.mjs does for the CLI, and Node runs
// it. The bundle stays in node_modules, next to onnxruntime-web's wasm, which the ort peer looks for
// in the node_modules folders above its own file.

import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const [script, ...args] = process.argv.slice(2);
const SCRIPTS = ['bench', 'report'];
if (!SCRIPTS.includes(script)) {
  console.error(`usage: node test/bench/run.mjs ${SCRIPTS.join('|')} [ARGS...]`);
  process.exit(2);
}

const outDir = join(root, 'node_modules', '.cache', 'kiln');
mkdirSync(outDir, { recursive: true });
const outfile = join(outDir, `${script}.mjs`);
await build({
  entryPoints: [join(here, `${script}.ts`)],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'inline',
  outfile,
  logLevel: 'warning',
  external: ['webgpu'],
  banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
});
// A child process, so the bundle sees itself as the script (its CLI entry runs) and Dawn's handles end with it.
const child = spawnSync(process.execPath, ['--enable-source-maps', outfile, ...args], { stdio: 'inherit' });
process.exit(child.status ?? 1);
