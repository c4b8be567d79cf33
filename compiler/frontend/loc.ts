// The user's source line for each op: the first stack frame outside kiln's own folders.
// Kiln's root is found from this file's own frame, so it works under vitest, esbuild bundles with
// source maps, and plain node alike.

import type { SourceLoc } from '../../ir/errors.ts';

const FRAME = /\(?((?:file:\/\/)?[^()\s]+?):(\d+):(\d+)\)?\s*$/;
const INTERNAL = ['compiler', 'ir', 'passes', 'codegen', 'runtime', 'bin'];

let kilnRoot: string | null | undefined;

function framePath(raw: string): string {
  return raw.startsWith('file://') ? decodeURIComponent(raw.slice('file://'.length)) : raw;
}

function frames(stack: string | undefined): { file: string; line: number; col: number }[] {
  const out = [];
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const m = FRAME.exec(line);
    if (m) out.push({ file: framePath(m[1]), line: Number(m[2]), col: Number(m[3]) });
  }
  return out;
}

function rootOf(file: string): string | null {
  const i = file.lastIndexOf('/compiler/frontend/');
  return i >= 0 ? file.slice(0, i) : null;
}

function isKilnFrame(file: string, root: string | null): boolean {
  if (file.startsWith('node:') || file.includes('/node_modules/')) return true;
  if (!root || !file.startsWith(root + '/')) return false;
  const rest = file.slice(root.length + 1);
  return rest === 'index.ts' || INTERNAL.some((dir) => rest.startsWith(dir + '/'));
}

/** Where the user's code called into kiln, or undefined when no user frame is on the stack. */
export function callerLoc(): SourceLoc | undefined {
  return userFrame(new Error().stack);
}

/** The first frame of `stack` in the user's code (outside kiln's own folders and Node's), with its source line. */
export function userFrame(stack: string | undefined): SourceLoc | undefined {
  // kiln's root, from this file's own frame (the first of a stack made here).
  if (kilnRoot === undefined) kilnRoot = rootOf(frames(new Error().stack)[0]?.file ?? '');
  const user = frames(stack).find((f) => !isKilnFrame(f.file, kilnRoot ?? null));
  if (!user) return undefined;
  const text = sourceLine(user.file, user.line);
  return { file: displayPath(user.file), line: user.line, col: user.col, ...(text ? { text } : {}) };
}

function displayPath(file: string): string {
  const cwd = typeof process !== 'undefined' && process.cwd ? process.cwd() : '';
  return cwd && file.startsWith(cwd + '/') ? file.slice(cwd.length + 1) : file;
}

const fileLines = new Map<string, string[] | null>();

/** The trimmed source line, read once per file; in browsers there is no file system, so none. */
export function sourceLine(file: string, line: number): string | undefined {
  if (!fileLines.has(file)) fileLines.set(file, readLines(file));
  return fileLines.get(file)?.[line - 1]?.trim() || undefined;
}

function readLines(file: string): string[] | null {
  try {
    const fs = typeof process !== 'undefined' ? (process.getBuiltinModule?.('fs') as typeof import('fs') | undefined) : undefined;
    return fs ? fs.readFileSync(file, 'utf8').split('\n') : null;
  } catch {
    return null;
  }
}
