#!/usr/bin/env node
// The `kiln` command. kiln is TypeScript with no build step: on each run, esbuild bundles the CLI
// together with the user's model file (so both share one copy of kiln), with inline source maps so
// errors and IR locations name the user's own lines, and Node runs the bundle.

import { build } from 'esbuild';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const modelArg = args.find((a, i) => /\.(m?ts|m?js)$/.test(a) && !(args[i - 1] ?? '').startsWith('--'));
const modelPath = modelArg ? resolve(modelArg) : null;

const entry = [
  `import { main } from ${JSON.stringify(join(root, 'compiler/cli/main.ts'))};`,
  modelPath ? `import * as model from ${JSON.stringify(modelPath)};` : 'const model = null;',
  'process.exitCode = await main(process.argv.slice(2), model);',
].join('\n');

const outDir = join(root, 'node_modules', '.cache', 'kiln');
mkdirSync(outDir, { recursive: true });
const outfile = join(outDir, `cli-${process.pid}.mjs`);
try {
  await build({
    stdin: { contents: entry, resolveDir: root, sourcefile: 'kiln-cli-entry.ts', loader: 'ts' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'inline',
    outfile,
    logLevel: 'silent',
    external: ['webgpu', 'esbuild', 'ts-morph', '@viz-js/viz', 'playwright-core'],
    banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
  });
} catch (e) {
  const first = e.errors?.[0];
  const where = first?.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : '';
  console.error(`KILN_E016 ${where}could not load ${modelArg ?? 'the kiln CLI'}: ${first?.text ?? e.message}`);
  process.exit(1);
}
process.setSourceMapsEnabled(true);
try {
  await import(pathToFileURL(outfile).href);
} finally {
  (await import('node:fs')).rmSync(outfile, { force: true });
}
// Dawn keeps handles open; the command is done, so leave with its status.
process.exit(process.exitCode ?? 0);
