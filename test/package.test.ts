// kiln as npm users get it: `npm pack`, the tarball installed into an empty project with no TypeScript,
// then the README's "Using kiln from code" block run by plain Node (CPU backend), the `kiln` command on
// a user's model, a .ts user file and the README's TypeScript blocks type-checked against the shipped
// declarations (the eager training block also run on the CPU), and the README's page.js bundled for the
// browser by esbuild (its own command) and by Vite with default settings. The install reads npm's cache first (`npm ci` filled it).

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The README block between `<!-- package-test:NAME -->` and `<!-- /package-test:NAME -->`, fences stripped. */
export function readmeBlock(name: string): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf-8');
  const block = new RegExp(`<!-- package-test:${name} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\`\\n<!-- /package-test:${name} -->`).exec(readme);
  if (!block) throw new Error(`README.md has no package-test:${name} block`);
  return block[1];
}

/** The README's TypeScript blocks that use nanoGPT's `model`, `idx` and `targets` without defining them. */
const README_TS_BLOCKS = ['ts-train', 'ts-eager', 'ts-autocast'];

/**
 * What those blocks assume, defined before them: a tiny model with nanoGPT's forward(idx, targets) ->
 * { logits, loss }, token ids and targets [1, 4], and the bias's values before the block runs.
 * Imports are hoisted, so the block's own `import ... from 'kiln'` may follow; `kiln.` names keep them apart.
 */
const README_PRELUDE = `import * as kiln from 'kiln';
class TinyLM extends kiln.Module {
  wte = new kiln.nn.Embedding(16, 8);
  head = new kiln.nn.Linear(8, 16);
  forward(idx: kiln.Tensor, targets: kiln.Tensor | null = null): { logits: kiln.Tensor; loss: kiln.Tensor | null } {
    const logits = this.head.forward(this.wte.forward(idx));
    return { logits, loss: targets ? kiln.F.crossEntropy(logits.view(-1, 16), targets.view(-1)) : null };
  }
}
kiln.manualSeed(0);
const model = new TinyLM();
const idx = kiln.tensor([1, 2, 3, 4], [1, 4], 'i32');
const targets = kiln.tensor([2, 3, 4, 5], [1, 4], 'i32');
const biasBefore = Array.from(await model.head.bias!.data());
void [idx, targets, biasBefore];
`;

/** A README TypeScript block as a module: the prelude, then the block verbatim. */
function readmeTs(name: string): string {
  return `${README_PRELUDE}\n${readmeBlock(name)}`;
}

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf-8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });
}

describe('the npm package', () => {
  let tmp: string;
  let project: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kiln-pack-'));
    run(process.execPath, [join(root, 'bin/build.mjs')], root); // what `prepack` does; --ignore-scripts below skips a second build
    run(npm, ['pack', '--ignore-scripts', '--silent', '--pack-destination', tmp], root);
    const tarball = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    expect(tarball).toBeDefined();
    project = join(tmp, 'app');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--silent', join(tmp, tarball!)], project);
  }, 180_000);
  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('ships dist/ and the CLI, not the .ts sources, and leaves webgpu (an optional peer) out', () => {
    const pkg = join(project, 'node_modules', 'kiln');
    const files = readdirSync(pkg, { recursive: true }).map(String);
    expect(files).toContain(join('dist', 'index.js'));
    expect(files).toContain(join('dist', 'index.d.ts'));
    expect(files).toContain(join('dist', 'index.browser.js'));
    expect(files).toContain(join('bin', 'kiln.mjs'));
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(readdirSync(join(project, 'node_modules'))).not.toContain('webgpu');
  });

  it("runs the README's example with plain node (index.mjs, CPU backend)", () => {
    writeFileSync(join(project, 'index.mjs'), readmeBlock('node'));
    const out = run(process.execPath, ['index.mjs'], project);
    expect(out).toMatch(/^\[ 2, 3 \] Float32Array\(6\) \[/);
  });

  it("runs the installed kiln command (dist's CLI) on a user's model that imports from 'kiln'", () => {
    const model = readFileSync(join(root, 'examples/nanogpt/model.ts'), 'utf-8').replace("from '../../index.ts'", "from 'kiln'");
    expect(model).toContain("from 'kiln'");
    writeFileSync(join(project, 'model.ts'), model);
    const out = run(join(project, 'node_modules', '.bin', 'kiln'), ['explain', 'model.ts'], project);
    expect(out).toMatch(/FUSED\s+transformer\.h\.0\.attn\s+model\.ts:\d+/); // source maps name the user's file
    expect(out).toContain('2 attention sites: 2 fused');
  });

  it("type-checks a .ts user file and the README's TypeScript blocks against the shipped declarations", () => {
    for (const name of README_TS_BLOCKS) writeFileSync(join(project, `${name}.ts`), readmeTs(name));
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: [] },
        files: ['user.ts', ...README_TS_BLOCKS.map((name) => `${name}.ts`)],
      }),
    );
    writeFileSync(
      join(project, 'user.ts'),
      [
        "import { F, Module, compile, nn, tensor, type Tensor } from 'kiln';",
        'class MLP extends Module {',
        '  fc = new nn.Linear(4, 3);',
        '  forward(x: Tensor): Tensor {',
        '    return F.gelu(this.fc.forward(x));',
        '  }',
        '}',
        "const forward = compile(new MLP().eval(), { backend: 'cpu' });",
        'const y: Tensor = await forward(tensor([1, 2, 3, 4], [1, 4]));',
        'const shape: readonly number[] = y.shape;',
        'console.log(shape);',
        '// @ts-expect-error: not a backend',
        "compile(new MLP(), { backend: 'tpu' });",
        '',
      ].join('\n'),
    );
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    let out = '';
    try {
      out = run(process.execPath, [tsc, '-p', 'tsconfig.json'], project);
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(out).toBe('');
  });

  it("runs the README's eager training block on the CPU: one AdamW step moves each bias by the learning rate", () => {
    // esbuild (a kiln dependency) strips the types; `import ... from 'kiln'` stays for Node to resolve
    const esbuild = join(project, 'node_modules', '.bin', 'esbuild');
    const epilogue = [
      'const after = Array.from(await model.head.bias!.data());',
      'console.log(JSON.stringify({ loss: await loss!.item(), moved: after.map((b, i) => Math.abs(b - biasBefore[i])) }));',
      '',
    ].join('\n');
    writeFileSync(join(project, 'eager-run.ts'), readmeTs('ts-eager') + epilogue);
    run(esbuild, ['eager-run.ts', '--format=esm', '--outfile=eager-run.mjs', '--log-level=error'], project);
    const { loss, moved } = JSON.parse(run(process.execPath, ['eager-run.mjs'], project)) as { loss: number; moved: number[] };
    // 16 classes, logits near 0 at init: the loss is near ln 16 = 2.77
    expect(loss).toBeGreaterThan(2);
    expect(loss).toBeLessThan(3.5);
    // AdamW's first step moves a parameter by lr * m/(sqrt(v) + eps) = lr * g/(|g| + eps): 1e-3 for a nonzero
    // gradient, to 1e-6 relative (eps 1e-8 against |g| of 1e-3 or more); biases have no weight decay (torch's groups)
    expect(moved).toHaveLength(16);
    for (const m of moved) expect(Math.abs(m - 1e-3)).toBeLessThan(1e-6 + 1e-7); // f32 rounding of a bias near 0.3: 3e-8
  });

  it("bundles the README's page.js for the browser with the esbuild command in its first line (defaults, no externals)", () => {
    const page = readmeBlock('browser');
    writeFileSync(join(project, 'page.js'), page);
    const [command, ...args] = /^\/\/ npx (.*)\n/.exec(page)![1].split(' ');
    expect(command).toBe('esbuild');
    run(join(project, 'node_modules', '.bin', 'esbuild'), [...args, '--log-level=error'], project);
    const js = readFileSync(join(project, 'page.bundle.js'), 'utf-8');
    expect(js).toContain('KILN_E'); // kiln's code is in it, not left to an import
    expect(js).not.toMatch(/from\s*["'](node:|webgpu)|import\(\s*["'](node:|webgpu)/);
  });

  it("builds a Vite app (index.html, the README's page.js) importing kiln with Vite defaults (no config)", () => {
    // Vite comes with vitest; run from the repo, it builds the temporary project with no vite.config.
    writeFileSync(join(project, 'index.html'), '<!doctype html><script type="module" src="./page.js"></script>\n');
    writeFileSync(join(project, 'page.js'), readmeBlock('browser'));
    run(process.execPath, [join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'error'], project);
    const assets = join(project, 'dist', 'assets');
    const js = readdirSync(assets).filter((f) => f.endsWith('.js')).map((f) => readFileSync(join(assets, f), 'utf-8')).join('\n');
    expect(js).toContain('KILN_E');
    expect(js).not.toMatch(/(from|import\()\s*["'](node:|webgpu)/);
  });
});
