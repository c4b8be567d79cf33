#!/usr/bin/env node
// Runs a benchmark script of this folder: `node test/bench/run.mjs bench|report [ARGS...]` (what
// `npm run bench` and `npm run bench:report` call). kiln has no build step, so esbuild bundles the
// TypeScript into node_modules/.cache/kiln/NAME.mjs (bin/bundle.mjs), and Node runs
// it. The bundle stays in node_modules, next to onnxruntime-web's wasm, which the ort peer looks for
// in the node_modules folders above its own file.

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from '../../bin/bundle.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [script, ...args] = process.argv.slice(2);
const SCRIPTS = ['bench', 'report'];
if (!SCRIPTS.includes(script)) {
  console.error(`usage: node test/bench/run.mjs ${SCRIPTS.join('|')} [ARGS...]`);
  process.exit(2);
}

const outfile = await bundle(join(here, `${script}.ts`), script, `test/bench/${script}.ts`, { external: ['webgpu'] });
// A child process, so the bundle sees itself as the script (its CLI entry runs) and Dawn's handles end with it.
const child = spawnSync(process.execPath, ['--enable-source-maps', outfile, ...args], { stdio: 'inherit' });
process.exit(child.status ?? 1);
