#!/usr/bin/env node
// Runs one TypeScript script with no build step: `node bin/run-ts.mjs path/to/script.ts [args]`.
// esbuild bundles the script (bin/bundle.mjs) with inline source maps, so stack traces
// name the .ts lines; each source file keeps its own `import.meta.url` (data files next to a script
// still resolve), and the script sees process.argv[1] as its own path, as if Node ran it directly.
// Its stderr passes through bin/dawn-filter.mjs (Dawn's harmless warnings dropped; KILN_LOG=device keeps them).

import { rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { bundle } from './bundle.mjs';
import { relaunchFiltered } from './dawn-filter.mjs';

const [scriptArg, ...scriptArgs] = process.argv.slice(2);
if (!scriptArg) {
  console.error('usage: node bin/run-ts.mjs <script.ts> [args...]');
  process.exit(2);
}
// Dawn's harmless adapter warnings come from native code on fd 2: run the script as a filtered child, as `kiln` does.
await relaunchFiltered(import.meta.url);
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

const outfile = await bundle(script, `script-${process.pid}`, scriptArg, { plugins: [ownImportMetaUrl] });
process.setSourceMapsEnabled(true);
process.argv = [process.argv[0], script, ...scriptArgs];
// Also when the script ends the process itself (train.ts on SIGINT calls process.exit).
process.once('exit', () => rmSync(outfile, { force: true }));
try {
  await import(pathToFileURL(outfile).href);
} finally {
  rmSync(outfile, { force: true });
}
