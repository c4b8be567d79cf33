#!/usr/bin/env node
// `npm run build` (also run by `prepare` and `prepack`): kiln as an npm package, in dist/.
// - tsc (tsconfig.build.json): one ESM .js per source file, with source maps and .d.ts declarations,
//   for Node: the library (index.ts) and the CLI (compiler/cli/main.ts, which bin/kiln.mjs runs when
//   the .ts sources are not there). tsc rewrites the `.ts` import specifiers to `.js`; the
//   declarations keep `.ts`, rewritten here so every moduleResolution setting reads them.
// - esbuild: dist/index.browser.js, one bundle of index.browser.ts for browsers, with
//   runtime/node-only.ts swapped for runtime/node-only.browser.ts (no Node module in it) and
//   packages (wgsl_reflect) left to the user's bundler.

import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });

for (const entry of readdirSync(dist, { recursive: true })) {
  const file = join(dist, String(entry));
  if (!file.endsWith('.d.ts')) continue;
  const text = readFileSync(file, 'utf-8');
  const fixed = text.replace(/((?:from|import)\s*\(?\s*['"])(\.{1,2}\/[^'"]*?)\.ts(['"])/g, '$1$2.js$3');
  if (fixed !== text) writeFileSync(file, fixed);
}

const nodeOnly = join(root, 'runtime', 'node-only.ts');
const swapNodeOnly = {
  name: 'kiln-node-only',
  setup(b) {
    b.onResolve({ filter: /node-only\.ts$/ }, (args) => {
      const path = resolve(args.resolveDir, args.path);
      return path === nodeOnly ? { path: join(root, 'runtime', 'node-only.browser.ts') } : undefined;
    });
  },
};
const result = await build({
  entryPoints: [join(root, 'index.browser.ts')],
  outfile: join(dist, 'index.browser.js'),
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: 'es2022',
  packages: 'external',
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
  plugins: [swapNodeOnly],
});
const inputs = Object.keys(result.metafile.inputs);
if (inputs.some((p) => /runtime\/node-only\.ts$/.test(p)) || !inputs.some((p) => /node-only\.browser\.ts$/.test(p))) {
  throw new Error('build: the browser bundle still reaches runtime/node-only.ts');
}
const { imports } = Object.values(result.metafile.outputs).find((o) => o.entryPoint)
  ?? Object.values(result.metafile.outputs)[0];
const nodeImports = imports.filter((i) => /^(node:|webgpu$|module$|fs$|path$|url$)/.test(i.path));
if (nodeImports.length) throw new Error(`build: the browser bundle imports ${nodeImports.map((i) => i.path).join(', ')}`);
console.log(`kiln build: dist/ (Node: tsc, ${inputs.length} files in the browser bundle)`);
