// kiln is TypeScript with no build step: its runners (bin/kiln.mjs, bin/run-ts.mjs, test/bench/run.mjs)
// bundle an entry with esbuild into node_modules/.cache/kiln/ and let Node run the bundle. One set of
// options for all: ESM for Node 20, inline source maps (stack traces and IR locations name .ts lines),
// native and heavy packages left external, and `require` available to CommonJS dependencies.

import { build } from 'esbuild';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Packages Node loads itself: `webgpu` is native; the rest are large and loaded only on use. */
export const EXTERNAL = ['webgpu', 'esbuild', 'ts-morph', '@viz-js/viz', 'playwright-core'];

/**
 * Bundles `entry` (a file path, or `{ contents, sourcefile }` for generated code) into the cache as
 * `name.mjs` and returns its path. A bundling error exits with one KILN_E016 line naming `what`.
 */
export async function bundle(entry, name, what, options = {}) {
  const outDir = join(root, 'node_modules', '.cache', 'kiln');
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, `${name}.mjs`);
  const input = typeof entry === 'string' ? { entryPoints: [entry] } : { stdin: { ...entry, resolveDir: root, loader: 'ts' } };
  try {
    await build({
      ...input,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      sourcemap: 'inline',
      outfile,
      logLevel: 'silent',
      external: options.external ?? EXTERNAL,
      // In kiln's checkout, `import ... from 'kiln'` is the .ts sources (package.json's kiln-source condition), as the CLI is.
      conditions: existsSync(join(root, 'index.ts')) ? ['kiln-source', 'module'] : undefined,
      plugins: options.plugins ?? [],
      banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
    });
  } catch (e) {
    const first = e.errors?.[0];
    const where = first?.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : '';
    console.error(`KILN_E016 ${where}could not load ${what}: ${first?.text ?? e.message}`);
    process.exit(1);
  }
  return outfile;
}
