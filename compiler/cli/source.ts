// The user's source around a line, read with ts-morph: a few numbered lines with a `>` at the line, and
// the function or method that holds it. ts-morph (the TypeScript compiler) loads only when asked, so
// commands that never show source stay quick; where files cannot be read (a browser), there is none.

import type { SourceLoc } from '../../ir/errors.ts';

export interface SourceContext {
  /** `  94 |     let att = ...`, with `>` instead of the first space on the loc's own line. */
  readonly lines: readonly string[];
  /** `CausalSelfAttention.forward`, `createModel`; undefined at the top level. */
  readonly enclosing?: string;
}

type TsMorph = typeof import('ts-morph');
type SourceFile = import('ts-morph').SourceFile;

let tsMorph: Promise<TsMorph | null> | undefined;
let project: import('ts-morph').Project | undefined;
const files = new Map<string, SourceFile | null>();

async function loadTsMorph(): Promise<TsMorph | null> {
  tsMorph ??= import('ts-morph').catch(() => null);
  return tsMorph;
}

async function sourceFile(file: string): Promise<SourceFile | null> {
  if (files.has(file)) return files.get(file)!;
  const morph = await loadTsMorph();
  let sf: SourceFile | null = null;
  try {
    project ??= morph ? new morph.Project({ useInMemoryFileSystem: false, skipFileDependencyResolution: true }) : undefined;
    sf = project?.addSourceFileAtPath(file) ?? null;
  } catch {
    sf = null; // not readable here: the caller shows no context
  }
  files.set(file, sf);
  return sf;
}

/** `before` lines before the loc's line and `after` after it, numbered, dedented together; null when unreadable. */
export async function sourceContext(loc: SourceLoc, before = 2, after = 2): Promise<SourceContext | null> {
  const sf = await sourceFile(loc.file);
  if (!sf) return null;
  const text = sf.getFullText().split(/\r?\n/);
  if (loc.line < 1 || loc.line > text.length) return null;
  const first = Math.max(1, loc.line - before);
  const last = Math.min(text.length, loc.line + after);
  const shown = text.slice(first - 1, last);
  const indent = Math.min(...shown.filter((l) => l.trim()).map((l) => /^\s*/.exec(l)![0].length));
  const width = String(last).length;
  const lines = shown.map((l, i) => {
    const n = first + i;
    return `${n === loc.line ? '>' : ' '} ${String(n).padStart(width)} | ${l.slice(indent)}`.trimEnd();
  });
  return { lines, enclosing: await enclosingName(sf, loc) };
}

/** The name of the function, method or constructor around the loc (`Class.method`). */
async function enclosingName(sf: SourceFile, loc: SourceLoc): Promise<string | undefined> {
  const { Node, SyntaxKind } = (await loadTsMorph())!;
  let pos: number;
  try {
    pos = sf.compilerNode.getPositionOfLineAndCharacter(loc.line - 1, Math.max(0, loc.col - 1));
  } catch {
    return undefined; // a column past the line's end: the file changed since the trace
  }
  for (let n = sf.getDescendantAtPos(pos); n; n = n.getParent()) {
    if (Node.isMethodDeclaration(n) || Node.isConstructorDeclaration(n) || Node.isGetAccessorDeclaration(n)) {
      const cls = n.getFirstAncestorByKind(SyntaxKind.ClassDeclaration)?.getName();
      const name = Node.isConstructorDeclaration(n) ? 'constructor' : n.getName();
      return cls ? `${cls}.${name}` : name;
    }
    if (Node.isFunctionDeclaration(n) && n.getName()) return n.getName();
    const parent = n.getParent();
    if ((Node.isArrowFunction(n) || Node.isFunctionExpression(n)) && Node.isVariableDeclaration(parent)) return parent.getName();
  }
  return undefined;
}
