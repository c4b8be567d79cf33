// `npm run train` and `npm run sample` launch their script through bin/run-ts.mjs, which, like the `kiln`
// command, runs it as a child whose stderr passes through bin/dawn-filter.mjs (relaunchFiltered): Dawn's
// harmless adapter warnings, written by native code to fd 2, never reach the user. A tiny script that opens
// the WebGPU device (lavapipe) stands in for sample.ts: no checkpoint to train first.

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DAWN_HARMLESS_WARNINGS } from '../bin/dawn-filter.mjs';
import { HAS_LAVAPIPE, LAVAPIPE_ICD } from './lavapipe.ts';

const RUN_TS = new URL('../bin/run-ts.mjs', import.meta.url).pathname;
const INDEX = new URL('../index.ts', import.meta.url).pathname;

/** Runs `node bin/run-ts.mjs script.ts status` as `npm run sample` does; the script exits with `status`. */
function runTs(script: string, status: number, log: string) {
  const env = { ...process.env, VK_ICD_FILENAMES: LAVAPIPE_ICD, KILN_LOG: log };
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('node', [RUN_TS, script, String(status)], { env, timeout: 120_000 }, (e, stdout, stderr) => resolve({ code: e ? Number(e.code) : 0, stdout, stderr })),
  );
}

describe.skipIf(!HAS_LAVAPIPE)('npm run train / sample (bin/run-ts.mjs) on lavapipe', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-run-ts-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const script = join(dir, 'tiny.ts');
  writeFileSync(
    script,
    [
      `import { tensor, useBackend } from ${JSON.stringify(INDEX)};`,
      "await useBackend('webgpu'); // opens Dawn's device: its adapter discovery writes the warnings",
      'const y = tensor([1, 2, 3], [3]).mul(tensor([4, 5, 6], [3]));',
      "console.log(Array.from(await y.data()).join(' '));",
      'const status = Number(process.argv[2]);',
      'if (status) console.error(`tiny.ts: exiting with ${status}`);',
      'process.exitCode = status;',
      '',
    ].join('\n'),
  );

  it("prints none of Dawn's harmless warnings, keeps the script's own stderr, and exits with the script's status", async () => {
    const ok = await runTs(script, 0, '');
    expect(ok.stdout).toBe('4 10 18\n'); // the script ran on the device
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const failed = await runTs(script, 3, '');
    expect(failed.stdout).toBe('4 10 18\n');
    expect(failed.stderr).toBe('tiny.ts: exiting with 3\n');
    expect(failed.code).toBe(3);
  });

  it('KILN_LOG=device runs unfiltered: the warnings the filter drops are there', async () => {
    const raw = await runTs(script, 0, 'device');
    expect(raw.code).toBe(0);
    const lines = raw.stderr.split('\n');
    // what the test above proves absent is present here (Dawn writes at least its two limit warnings)
    expect(lines.filter((l) => DAWN_HARMLESS_WARNINGS.some((w) => w.test(l))).length).toBeGreaterThanOrEqual(1);
    expect(lines.some((l) => l.startsWith('[kiln:device] opened '))).toBe(true);
  });
});
