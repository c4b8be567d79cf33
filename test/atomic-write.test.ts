// Every file kiln writes goes through writeFileAtomic (runtime/files.ts): a process killed mid-write
// leaves the old file or the new one, never a torn one; a failed write leaves no temporary behind.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sameFile } from '../compiler/cli/paths.ts';
import { isTempOf, writeFileAtomic } from '../runtime/files.ts';
import { payload } from './fixtures/atomic-writer.ts';
import { FIXTURE_EXPECTED, FIXTURE_WEIGHTS } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const temps = (folder: string, name: string) => readdirSync(folder).filter((f) => isTempOf(f, name));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once the child has printed "ready" (its first write is done). */
function ready(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`writer exited with ${code} before it was ready`)));
  });
}

describe('writeFileAtomic under SIGKILL', () => {
  let writer: string;
  beforeAll(async () => {
    // The child runs the fixture bundled once, so each spawn is plain node on a .mjs.
    writer = join(dir, 'writer.mjs');
    await build({ entryPoints: [new URL('./fixtures/atomic-writer.ts', import.meta.url).pathname], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: writer, logLevel: 'silent' });
  });

  it('leaves the target as one complete payload or the other after each of 60 kills at random moments', async () => {
    const folder = join(dir, 'kills');
    mkdirSync(folder);
    const target = join(folder, 'ckpt.safetensors');
    const payloads = [payload(0), payload(1)].map((p) => Buffer.from(p));
    writeFileSync(target, payloads[0]);
    const seen = [0, 0];
    let midWrite = 0;
    for (let kill = 0; kill < 60; kill++) {
      const child = spawn(process.execPath, [writer], { env: { ...process.env, KILN_ATOMIC_WRITER_TARGET: target }, stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((r) => child.on('exit', r));
      // A third of the kills land at start-up or during the first write; the rest mid-loop.
      if (kill % 3 !== 0) await ready(child);
      await sleep(Math.random() * 60);
      child.kill('SIGKILL');
      await exited;
      const got = readFileSync(target);
      const which = payloads.findIndex((p) => p.equals(got));
      expect(which, `kill ${kill}: target of ${got.length} bytes is neither payload`).toBeGreaterThanOrEqual(0);
      seen[which]++;
      // At most the one temporary that was in flight; a dead writer's temporary is anyone's to remove.
      const left = temps(folder, 'ckpt.safetensors');
      expect(left.length, `kill ${kill}: ${left.join(', ')}`).toBeLessThanOrEqual(1);
      if (left.length) midWrite++;
      for (const f of left) rmSync(join(folder, f));
    }
    console.log(`60 kills: target held payload 0 ${seen[0]} times, payload 1 ${seen[1]} times; ${midWrite} kills left a temporary (mid-write)`);
    expect(midWrite).toBeGreaterThanOrEqual(10); // the kills did land mid-write
    expect(seen[0] + seen[1]).toBe(60);

    await writeFileAtomic(target, payloads[1]);
    expect(readFileSync(target).equals(payloads[1])).toBe(true);
    expect(readdirSync(folder)).toEqual(['ckpt.safetensors']);
  }, 60_000);
});

describe('writeFileAtomic', () => {
  it('replaces the file and leaves nothing else in the folder', async () => {
    const folder = join(dir, 'plain');
    mkdirSync(folder);
    await writeFileAtomic(join(folder, 'a.json'), '{"old":1}');
    await writeFileAtomic(join(folder, 'a.json'), new TextEncoder().encode('{"new":2}'));
    expect(readFileSync(join(folder, 'a.json'), 'utf8')).toBe('{"new":2}');
    expect(readdirSync(folder)).toEqual(['a.json']);
  });

  it('removes its temporary and leaves the target alone when the rename fails (the target is a folder)', async () => {
    const folder = join(dir, 'rename-fails');
    mkdirSync(join(folder, 'out.svg'), { recursive: true });
    writeFileSync(join(folder, 'out.svg', 'inside'), 'x');
    await expect(writeFileAtomic(join(folder, 'out.svg'), '<svg/>')).rejects.toThrow(/EISDIR|ENOTEMPTY|EEXIST|EPERM/);
    expect(readdirSync(folder)).toEqual(['out.svg']);
    expect(readdirSync(join(folder, 'out.svg'))).toEqual(['inside']);
  });

  it('fails without creating anything when the folder does not exist', async () => {
    await expect(writeFileAtomic(join(dir, 'no-such-folder', 'x.json'), '{}')).rejects.toThrow(/ENOENT/);
    expect(existsSync(join(dir, 'no-such-folder'))).toBe(false);
  });

  it('replaces the file a symlink points to, keeping the link, and keeps an existing file\'s permissions', async () => {
    const folder = join(dir, 'links');
    mkdirSync(folder);
    const real = join(folder, 'real.safetensors');
    writeFileSync(real, 'old');
    await chmod(real, 0o640);
    symlinkSync(real, join(folder, 'link.safetensors'));
    await writeFileAtomic(join(folder, 'link.safetensors'), 'new');
    expect(lstatSync(join(folder, 'link.safetensors')).isSymbolicLink()).toBe(true);
    expect(readFileSync(real, 'utf8')).toBe('new');
    expect(statSync(real).mode & 0o777).toBe(0o640);
    expect(readdirSync(folder).sort()).toEqual(['link.safetensors', 'real.safetensors']);
  });
});

describe('sameFile (the check behind KILN_E017)', () => {
  it('sees one file through another spelling, a symlink, a hard link, or a not-yet-written path in a symlinked folder', () => {
    const folder = join(dir, 'same');
    mkdirSync(folder);
    const w = join(folder, 'w.safetensors');
    writeFileSync(w, 'w');
    symlinkSync(w, join(folder, 'sym.safetensors'));
    linkSync(w, join(folder, 'hard.safetensors'));
    symlinkSync(folder, join(dir, 'same-link'));
    expect(sameFile(join(folder, '..', 'same', 'w.safetensors'), w)).toBe(true);
    expect(sameFile(join(folder, 'sym.safetensors'), w)).toBe(true);
    expect(sameFile(join(folder, 'hard.safetensors'), w)).toBe(true);
    expect(sameFile(join(dir, 'same-link', 'new.safetensors'), join(folder, 'new.safetensors'))).toBe(true);
    expect(sameFile(join(folder, 'other.safetensors'), w)).toBe(false);
  });
});

describe('kiln refuses an --out that is one of its inputs, before any work (KILN_E017)', () => {
  const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
  const MODEL = new URL('../examples/nanogpt/model.ts', import.meta.url).pathname;
  const folder = join(dir, 'cli');
  mkdirSync(folder);
  // Copies, so that a broken check could only overwrite these.
  const [weights, inputs] = [join(folder, 'w.safetensors'), join(folder, 'in.safetensors')];
  copyFileSync(FIXTURE_WEIGHTS, weights);
  copyFileSync(FIXTURE_EXPECTED, inputs);

  /** bin/kiln.mjs as a user runs it: the exit status and kiln's own lines on stderr. */
  async function kiln(args: string[]): Promise<{ code: number; stderr: string }> {
    return promisify(execFile)('node', [KILN, ...args], { cwd: folder, timeout: 120_000 }).then(
      (r) => ({ code: 0, stderr: r.stderr }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    ).then((r) => ({ code: r.code, stderr: r.stderr.split('\n').filter((l) => /^(KILN_E|error)/.test(l)).join('\n') })); // kiln's lines, not Dawn's
  }

  it('kiln eval --out naming --inputs through a symlink', async () => {
    symlinkSync(inputs, join(folder, 'link.safetensors'));
    const r = await kiln(['eval', MODEL, '--weights', weights, '--inputs', 'in.safetensors', '--out', 'link.safetensors', '--outputs', 'logits', '--device', 'cpu']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('KILN_E017 kiln eval: --out link.safetensors is the same file as --inputs in.safetensors, which it would overwrite; write to another path');
    expect(readFileSync(inputs).equals(readFileSync(FIXTURE_EXPECTED))).toBe(true);
  });

  it('kiln dump --out naming --weights', async () => {
    const r = await kiln(['dump', MODEL, '--weights', 'w.safetensors', '--out', join(folder, 'w.safetensors')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`KILN_E017 kiln dump: --out ${join(folder, 'w.safetensors')} is the same file as --weights w.safetensors, which it would overwrite; write to another path`);
    expect(readFileSync(weights).equals(readFileSync(FIXTURE_WEIGHTS))).toBe(true);
  });

  it('kiln dump --out naming MODEL.ts itself', async () => {
    const model = join(folder, 'model.ts');
    writeFileSync(model, 'export default () => ({ forward: () => null });\n');
    const r = await kiln(['dump', 'model.ts', '--out', './model.ts']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('KILN_E017 kiln dump: --out ./model.ts is the same file as MODEL.ts model.ts, which it would overwrite; write to another path');
    expect(readFileSync(model, 'utf8')).toMatch(/^export default/);
  });
});
