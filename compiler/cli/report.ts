// The one line a command prints for an error, whatever raised it: kiln's own errors as they are; a file
// the system refused (EACCES, ENOSPC, ...) as KILN_E019 naming the user's path; anything else as KILN_E020
// naming the first line of the user's code on the stack, never one of kiln's own files. Used by `kiln`
// and by the nanoGPT scripts (train.ts, sample.ts). KILN_DEBUG=1 prints the stack trace after the line.

import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnError } from '../../ir/errors.ts';

/** What to check, by errno code; codes not listed get the system's own words only. */
const FILE_HINTS: Record<string, string> = {
  ENOENT: 'check that the path and its folder exist',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EISDIR: 'it is a folder; name a file',
  EACCES: 'check its permissions',
  EPERM: 'check its permissions',
  EROFS: 'the file system is read-only',
  ENOSPC: 'free some disk space',
  EDQUOT: 'the disk quota is used up',
  EMFILE: 'too many open files',
};

type SystemError = Error & { code: string; syscall?: string; path?: string; dest?: string };

function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as SystemError).code === 'string' && /^E[A-Z]+$/.test((e as SystemError).code) && typeof (e as SystemError).syscall === 'string';
}

/**
 * A file the system refused, as KILN_E019 naming `path` (and the flag that gave it), or `e` unchanged when
 * it is not a file system error. Without `path`, the error's own path is named.
 */
export function fileError(e: unknown, path?: string, flag?: string): unknown {
  if (!isSystemError(e)) return e;
  const where = path ?? userPath(e.path ?? e.dest);
  const what = /^[A-Z]+: ([^,]+)/.exec(e.message)?.[1] ?? e.code;
  const hint = FILE_HINTS[e.code];
  const subject = where ? `${where}${flag ? ` (${flag})` : ''}: ` : '';
  return new KilnError('KILN_E019', `${subject}cannot ${e.syscall}: ${what} (${e.code})${hint ? `; ${hint}` : ''}`);
}

/**
 * writeFileAtomic (runtime/files.ts) writes `.NAME.PID.RANDOM.tmp` beside NAME and renames it over NAME;
 * an error on the temporary names the user's file instead.
 */
function userPath(path: string | undefined): string | undefined {
  const temp = path && /^(.*\/)?\.(.+)\.\d+\.[a-z0-9]+\.tmp$/.exec(path);
  return temp ? `${temp[1] ?? ''}${temp[2]}` : path;
}

/** Any error as a KilnError: kiln's own unchanged, file system errors KILN_E019, the rest KILN_E020. */
export function asKilnError(e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  const file = fileError(e);
  if (file instanceof KilnError) return file;
  const err = e instanceof Error ? e : new Error(String(e));
  const where = userFrame(err.stack);
  const kind = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  return new KilnError('KILN_E020', `${where ? `${where}: ` : ''}${kind}${err.message.split('\n')[0]}`);
}

/** The line to print for `e`. */
export function errorLine(e: unknown): string {
  return asKilnError(e).message;
}

/** Prints the line on stderr; with KILN_DEBUG=1 the stack trace follows it. */
export function reportError(e: unknown): void {
  console.error(errorLine(e));
  if (process.env.KILN_DEBUG === '1' && e instanceof Error && e.stack) console.error(e.stack);
}

/** kiln's own folders: a frame there is kiln's, not the user's. examples/ and test/ are kiln's users. */
const KILN_FILES = ['compiler/', 'ir/', 'passes/', 'codegen/', 'runtime/', 'bin/', 'index.ts'];

/** kiln's root: this file is compiler/cli/report.ts, or bundled into node_modules/.cache/kiln/ (bin/bundle.mjs). */
function kilnRoot(): string {
  const here = fileURLToPath(import.meta.url);
  const cache = here.lastIndexOf('/node_modules/.cache/');
  return cache >= 0 ? here.slice(0, cache) : resolve(dirname(here), '../..');
}

/** `file:line` of the first stack frame in the user's code, relative to the working folder. */
function userFrame(stack: string | undefined): string | undefined {
  const root = kilnRoot();
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?[^()\s]+):(\d+):\d+\)?$/.exec(line.trim());
    if (!m || m[1].startsWith('node:') || m[1].includes('node_modules')) continue;
    const file = m[1].replace(/^file:\/\//, '');
    const inKiln = relative(root, file);
    if (!inKiln.startsWith('..') && KILN_FILES.some((k) => inKiln.startsWith(k))) continue;
    const shown = file.startsWith(`${process.cwd()}/`) ? file.slice(process.cwd().length + 1) : file;
    return `${shown}:${m[2]}`;
  }
  return undefined;
}
