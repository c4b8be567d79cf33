#!/usr/bin/env node
// The `kiln` command. On each run, esbuild bundles the CLI together with the user's model file (so both
// share one copy of kiln), with inline source maps so errors and IR locations name the user's own lines,
// and Node runs the bundle. In kiln's checkout the CLI is the .ts sources (no build step); an installed
// package has only dist/ (npm run build), whose CLI and `import ... from 'kiln'` are the same files.

import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { bundle, root } from './bundle.mjs';
import { relaunchFiltered } from './dawn-filter.mjs';

const args = process.argv.slice(2);
// Dawn's harmless adapter warnings come from native code on fd 2: run the command as a filtered child.
await relaunchFiltered(import.meta.url, args);
// MODEL.ts is the .ts or .js argument that is not a flag's value. Which flags take a value is known only
// inside the bundle, so one after a flag (`--json MODEL.ts`) is taken when no other is free; main() then
// checks that the file bundled is the command's MODEL.ts.
const scripts = args.flatMap((a, i) => (/\.(m?ts|m?js)$/.test(a) ? [i] : []));
const modelAt = scripts.find((i) => !(args[i - 1] ?? '').startsWith('--')) ?? scripts[0];
const modelArg = modelAt === undefined ? undefined : args[modelAt];
const modelPath = modelArg ? resolve(modelArg) : null;

const sourceMain = join(root, 'compiler/cli/main.ts');
const cliMain = existsSync(sourceMain) ? sourceMain : join(root, 'dist/compiler/cli/main.js');
const entry = [
  `import { main } from ${JSON.stringify(cliMain)};`,
  modelPath ? `import * as model from ${JSON.stringify(modelPath)};` : 'const model = null;',
  `process.exitCode = await main(process.argv.slice(2), model, ${JSON.stringify(modelPath)});`,
].join('\n');

const outfile = await bundle({ contents: entry, sourcefile: 'kiln-cli-entry.ts' }, `cli-${process.pid}`, modelArg ?? 'the kiln CLI');
process.setSourceMapsEnabled(true);
try {
  await import(pathToFileURL(outfile).href);
} catch (e) {
  // main() reports its own errors; what reaches here was thrown while the model file's top level ran
  console.error(`KILN_E016 could not load ${modelArg ?? 'the kiln CLI'}: ${String(e?.message ?? e).split('\n')[0]}`);
  if (process.env.KILN_DEBUG === '1') console.error(e?.stack ?? e);
  process.exitCode = 1;
} finally {
  rmSync(outfile, { force: true });
}
// Dawn keeps handles open; the command is done, so leave with its status.
process.exit(process.exitCode ?? 0);
