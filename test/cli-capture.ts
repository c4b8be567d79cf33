// Runs a CLI command in-process, as main() would, and returns what it printed.

import { execFile } from 'node:child_process';
import { vi } from 'vitest';
import { withoutDawnWarnings } from '../bin/dawn-filter.mjs';
import { parseArgs } from '../compiler/cli/args.ts';
import type { Command } from '../compiler/cli/main.ts';

export const NANOGPT = 'examples/nanogpt/model.ts';
export const NEAR_MISS = 'examples/near-miss/model.ts';
/** nanoGPT small enough to compile in well under a second. */
export const SMALL_GPT = { n_layer: 2, n_head: 2, n_embd: 32, block_size: 32, vocab_size: 96 };

const MODULES: Record<string, () => Promise<unknown>> = {
  [NANOGPT]: () => import('../examples/nanogpt/model.ts'),
  [NEAR_MISS]: () => import('../examples/near-miss/model.ts'),
};

/** `kiln <command> <argv...>` with argv[0] one of the example models; console.log lines, newline-terminated. */
export async function printed(command: Command, argv: readonly string[]): Promise<string> {
  const lines: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  try {
    await command.run(parseArgs(command.spec, argv), await MODULES[argv[0]]());
  } finally {
    log.mockRestore();
  }
  return lines.join('\n') + '\n';
}

/** `node ARGS` as a user runs kiln (bin/kiln.mjs, bin/run-ts.mjs): its exit status and what it printed (stderr without Dawn's known-harmless warnings). */
export function runNode(args: readonly string[], options: { cwd?: string; env?: Record<string, string>; timeout?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { ...process.env, ...options.env };
    execFile('node', args, { cwd: options.cwd, env, timeout: options.timeout ?? 120_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr: withoutDawnWarnings(stderr) }); // Dawn's native adapter warnings are not kiln's output
    });
  });
}
