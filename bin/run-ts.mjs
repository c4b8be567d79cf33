#!/usr/bin/env node
// Runs one TypeScript script with no build step: `node bin/run-ts.mjs path/to/script.ts [args]`.
// esbuild bundles the script (options as in bin/kiln.mjs) with inline source maps, so stack traces
// name the .ts lines; each source file keeps its own `import.meta.url` (data files next to a script
// still resolve), and the script sees process.argv[1] as its own path, as if Node ran it directly.

import { build } from 'esbuild';
import { mkdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const [scriptArg, ...scriptArgs] = process.argv.slice(2);
if (!scriptArg) {
  console.error('usage: node bin/run-ts.mjs <script.ts> [args...]');
  process.exit(2);
}
const script = resolve(scriptArg);

/** Bundling moves every module into one file; give each .ts file back its own import.meta.url. */
const ownImportMetaUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.[mc]?ts$/ }, async (args) => {
      if (args.path.includes('node_modules')) return undefined;
      const source = await readFile(args.path, 'utf-8');
      return { contents: source.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)), loader: 'ts' };
    });
  },
};

const outDir = join(root, 'node_modules', '.cache', 'kiln');
mkdirSync(outDir, { recursive: true });
const outfile = join(outDir, `script-${process.pid}.mjs`);
try {
  await build({
    entryPoints: [script],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'inline',
    outfile,
    logLevel: 'silent',
    external: ['webgpu', 'esbuild', 'ts-morph', '@viz-js/viz', 'playwright-core'],
    banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
    plugins: [ownImportMetaUrl],
  });
} catch (e) {
  const first = e.errors?.[0];
  const where = first?.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : '';
  console.error(`KILN_E016 ${where}could not load ${scriptArg}: ${first?.text ?? e.message}`);
  process.exit(1);
}
process.setSourceMapsEnabled(true);
process.argv = [process.argv[0], script, ...scriptArgs];
try {
  await import(pathToFileURL(outfile).href);
} finally {
  rmSync(outfile, { force: true });
}
