// The README's "in this repository" block (between `<!-- readme-test:repo -->` markers), verbatim: it
// imports the sources by relative path, so it is checked as if it were a file in the repository's root.
// Type-checked with the repository's tsconfig (a virtual file, nothing written to the checkout), then
// bundled as bin/run-ts.mjs bundles scripts and run on WebGPU (SwiftShader), its logits compared with the
// same block on the 'cpu' backend (the CPU reference).

import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { relError } from './helpers.ts';

const root = resolve(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf-8');
const block = /<!-- readme-test:repo -->\n```ts\n([\s\S]*?)```\n<!-- \/readme-test:repo -->/.exec(readme)?.[1];
// in the repository's node_modules, as bin/bundle.mjs puts its bundles: Node resolves the external webgpu from there
mkdirSync(join(root, 'node_modules', '.cache', 'kiln'), { recursive: true });
const tmp = mkdtempSync(join(root, 'node_modules', '.cache', 'kiln', 'readme-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The block bundled (imports resolved from the repository's root) and run by Node; its logits, as the last stdout line. */
async function runBlock(code: string, name: string): Promise<number[]> {
  const outfile = join(tmp, `${name}.mjs`);
  const epilogue = '\nconsole.log(JSON.stringify(Array.from(await logits.data())));\n';
  await build({
    stdin: { contents: code + epilogue, resolveDir: root, sourcefile: 'README.md', loader: 'ts' },
    bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile, logLevel: 'silent', external: ['webgpu'],
    banner: { js: "import { createRequire as __kilnRequire } from 'node:module'; const require = __kilnRequire(import.meta.url);" },
  });
  const stdout = await new Promise<string>((done, fail) =>
    execFile(process.execPath, [outfile], { cwd: root, timeout: 120_000 }, (e, out, err) => (e ? fail(new Error(`${name}: ${err}`)) : done(out))),
  );
  const lines = stdout.trimEnd().split('\n');
  expect(lines[0]).toMatch(/^Float32Array\(96\) \[/); // the block's own console.log: the last position's 96 logits
  return JSON.parse(lines[lines.length - 1]) as number[];
}

describe("README's in-repository nanoGPT block", () => {
  it('is in README.md between its markers, on WebGPU as written', () => {
    expect(block).toBeDefined();
    expect(block).toContain("compile(model, { backend: 'webgpu' })");
  });

  it("type-checks with the repository's tsconfig, as a file in its root", () => {
    const config = ts.getParsedCommandLineOfConfigFile(join(root, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined })!;
    const file = join(root, 'readme-repo-block.ts');
    const host = ts.createCompilerHost(config.options);
    const { fileExists, getSourceFile } = host;
    host.fileExists = (f) => f === file || fileExists(f);
    host.getSourceFile = (f, language, ...rest) => (f === file ? ts.createSourceFile(f, block!, language) : getSourceFile(f, language, ...rest));
    // with the project's own declaration files (wgsl_reflect's types); the sources are tsc -p .'s to check, the block is this test's
    const program = ts.createProgram([...config.fileNames.filter((f) => f.endsWith('.d.ts')), file], config.options, host);
    const sourceFile = program.getSourceFile(file);
    const errors = [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)].map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(errors).toEqual([]);
  }, 120_000);

  it("runs on WebGPU and gives the 'cpu' backend's logits, within 1e-5", async () => {
    const [gpu, cpu] = [await runBlock(block!, 'webgpu'), await runBlock(block!.replace("backend: 'webgpu'", "backend: 'cpu'"), 'cpu')];
    expect(gpu).toHaveLength(96);
    expect(new Set(gpu).size).toBeGreaterThan(90); // real logits, not a constant
    // f32 on both: SwiftShader's kernels against the CPU reference of the same graph, a 2-layer, 32-wide model;
    // kiln's per-op f32 tests hold 1e-5 relative, and the two processes build the same weights (seeded init)
    expect(relError(gpu, cpu)).toBeLessThan(1e-5);
  }, 240_000);
});
