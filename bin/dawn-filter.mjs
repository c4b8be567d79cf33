// Dawn writes its known-harmless adapter warnings (DAWN_HARMLESS_WARNINGS below) from
// native code straight to file descriptor 2, where no JavaScript can catch them. So the `kiln` launcher
// and `npm run train`/`npm run sample` (bin/run-ts.mjs) run the command as a child whose stderr comes through this filter: whole lines that match are dropped,
// everything else passes at once (a progress line rewritten with \r is not held back). KILN_LOG=device
// (or all) keeps them: the launcher then runs the command in its own process, unfiltered.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Dawn's known-harmless adapter warnings, printed once per process while it enumerates Vulkan adapters: a
 * limit it caps (kiln uses no dynamic offsets), an adapter it skips for lacking a feature kiln does not
 * use, no Vulkan driver before kiln's SwiftShader fallback. Dawn has no option or toggle to silence them.
 */
export const DAWN_HARMLESS_WARNINGS = [
  /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/,
  /^Warning: Vulkan \w+(?:\*\w+)? (?:feature )?required\.?$/,
  /^Warning: vkCreateInstance: Found no drivers!$/,
  /^Warning: vkCreateInstance failed with VK_ERROR_INCOMPATIBLE_DRIVER$/,
  /^ {4}at \w+ \(.*\/dawn\/src\/dawn\/.*\)$/,
];

/** A test of stderr's whole lines, in order: false for a harmless line and for the blank line Dawn leaves after its trace. */
function keepLine() {
  let afterTrace = false;
  return (line) => {
    if (DAWN_HARMLESS_WARNINGS.some((w) => w.test(line))) {
      afterTrace = line.startsWith('    at ');
      return false;
    }
    const blankAfterTrace = afterTrace && line === '';
    afterTrace = false;
    return !blankAfterTrace;
  };
}

/** `text` (a process's stderr, read whole) without the harmless lines: what code reading a kiln process's stderr (the CLI tests) uses. */
export function withoutDawnWarnings(text) {
  const lines = text.split('\n');
  const last = lines.pop();
  const keep = keepLine();
  return lines.filter(keep).map((line) => line + '\n').join('') + last;
}

/** Whether the launcher should filter: not inside the filtered child already, and not asked to show device logs. */
export function wantsFilter(env = process.env) {
  return !env.KILN_FILTERED && !/(^|,)\s*(device|all)\s*(,|$)/.test(env.KILN_LOG ?? '');
}

/** A text that could still grow into a harmless line: held until its line ends. */
const mayBeWarning = (partial) => partial.length > 0 && ('Warning: '.startsWith(partial.slice(0, 9)) || '    at '.startsWith(partial.slice(0, 7)));

/** Copies `input` to `output`, less the harmless lines (and the blank line Dawn leaves after a trace). */
export function filterStream(input, output) {
  const keep = keepLine();
  let pending = '';
  input.setEncoding('utf8');
  input.on('data', (chunk) => {
    const parts = (pending + chunk).split('\n');
    pending = parts.pop();
    let out = parts.filter(keep).map((line) => line + '\n').join('');
    if (!mayBeWarning(pending)) {
      out += pending;
      pending = '';
    }
    if (out) output.write(out);
  });
  input.on('end', () => pending && output.write(pending));
}

/**
 * Runs this script again as a child with stderr filtered and returns its exit status. The child is told
 * whether stderr is a terminal (KILN_STDERR_TTY), so progress lines still redraw in place. A Ctrl-C on a
 * terminal reaches the child itself (same process group); a signal sent to the launcher alone is passed on.
 */
export function runFiltered(script, args) {
  return new Promise((resolve) => {
    const env = { ...process.env, KILN_FILTERED: '1', ...(process.stderr.isTTY ? { KILN_STDERR_TTY: String(process.stderr.columns ?? 80) } : {}) };
    const child = spawn(process.execPath, [...process.execArgv, script, ...args], { stdio: ['inherit', 'inherit', 'pipe'], env });
    filterStream(child.stderr, process.stderr);
    // A terminal's Ctrl-C (SIGINT) and hang-up (SIGHUP) reach the whole foreground group, the child too; SIGTERM is sent to one process.
    const forward = (signal) => () => {
      if (signal === 'SIGTERM' || !process.stdin.isTTY) child.kill(signal);
    };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, forward(signal));
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[signal] ?? 1) : 1)));
  });
}

/**
 * A launcher's first step (bin/kiln.mjs, bin/run-ts.mjs): unless it is the filtered child already or
 * KILN_LOG asks for device logs, runs the launcher (`launcherUrl`, its import.meta.url) again as a filtered
 * child with the same arguments and exits with the child's status. Otherwise returns, and the launcher runs
 * the command itself.
 */
export async function relaunchFiltered(launcherUrl, args = process.argv.slice(2)) {
  if (wantsFilter()) process.exit(await runFiltered(fileURLToPath(launcherUrl), args));
}
