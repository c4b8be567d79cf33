// The one line a command prints for an error, whatever raised it: kiln's own errors as they are; a file
// the system refused (EACCES, ENOSPC, ...) as KILN_E019 naming the user's path; anything else as KILN_E020
// naming the first line of the user's code on the stack, never one of kiln's own files. Used by `kiln`
// and by the nanoGPT scripts (train.ts, sample.ts). KILN_DEBUG=1 prints the stack trace after the line.

import { KilnError } from '../../ir/errors.ts';
import { tempTarget } from '../../runtime/files.ts';
import { userFrame } from '../frontend/loc.ts';

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

/** The user's path: an error on writeFileAtomic's temporary names the file it was replacing. */
function userPath(path: string | undefined): string | undefined {
  return (path && tempTarget(path)) || path;
}

/** Any error as a KilnError: kiln's own unchanged, file system errors KILN_E019, the rest KILN_E020. */
export function asKilnError(e: unknown): KilnError {
  if (e instanceof KilnError) return e;
  const file = fileError(e);
  if (file instanceof KilnError) return file;
  const err = e instanceof Error ? e : new Error(String(e));
  const frame = userFrame(err.stack);
  const where = frame && `${frame.file}:${frame.line}`;
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
