// Positions in the page's bundle (main.js) mapped back to the files it was built from, through the source
// map kiln serve writes beside it (main.js.map, with sourcesContent). Installed as V8's
// Error.prepareStackTrace, every stack the page makes names the original files, so kiln's callerLoc finds
// the user's frame (model.ts:96) as it does in Node, instead of the bundle's line (main.js:6417).

export interface SourceMapJson {
  readonly version: number;
  readonly sources: readonly string[];
  readonly sourcesContent?: readonly (string | null)[];
  readonly sourceRoot?: string;
  readonly mappings: string;
}

/** One mapped position: original file (resolved against `root`), 1-based line and column. */
export interface Original {
  readonly file: string;
  readonly line: number;
  readonly col: number;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_VALUE = new Map(Array.from(B64, (ch, i) => [ch, i]));

/** Decodes one mappings segment (base64 VLQ numbers). */
export function decodeVlq(segment: string): number[] {
  const out: number[] = [];
  let value = 0;
  let shift = 0;
  for (const ch of segment) {
    const digit = B64_VALUE.get(ch);
    if (digit === undefined) throw new Error(`bad base64 VLQ character ${JSON.stringify(ch)} in ${JSON.stringify(segment)}`);
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      out.push(value & 1 ? -(value >>> 1) : value >>> 1);
      value = 0;
      shift = 0;
    }
  }
  return out;
}

/** "a/b/../c/./d" -> "a/c/d"; the leading "/" kept. */
function normalize(path: string): string {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '..') parts.pop();
    else if (p !== '.' && (p !== '' || parts.length === 0)) parts.push(p);
  }
  return parts.join('/');
}

/** A decoded source map: each generated line's segments [generated col, source, original line, original col], sorted. */
export class SourceMap {
  private readonly lines: Int32Array[];
  readonly files: readonly string[];

  /** `root` is the folder the bundle lies in, as a path: each source is resolved against it ("/kiln/examples/browser/"). */
  constructor(readonly json: SourceMapJson, root: string) {
    const base = root.endsWith('/') ? root : root + '/';
    this.files = json.sources.map((s) => normalize(s.startsWith('/') ? s : base + (json.sourceRoot ?? '') + s));
    this.lines = [];
    let source = 0;
    let line = 0;
    let col = 0;
    for (const text of json.mappings.split(';')) {
      const segs: number[] = [];
      let gen = 0;
      for (const segment of text.split(',')) {
        if (!segment) continue;
        const v = decodeVlq(segment);
        gen += v[0];
        if (v.length < 4) continue; // a generated position with no original
        source += v[1];
        line += v[2];
        col += v[3];
        segs.push(gen, source, line, col);
      }
      this.lines.push(Int32Array.from(segs));
    }
  }

  /** The original position of generated `line`:`col` (both 1-based, as stack frames give them), or null. */
  original(line: number, col: number): Original | null {
    const segs = this.lines[line - 1];
    if (!segs || segs.length === 0) return null;
    const c = col - 1;
    // the last segment starting at or before c
    let lo = 0;
    let hi = segs.length / 4 - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (segs[mid * 4] <= c) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0) return null;
    return { file: this.files[segs[found * 4 + 1]], line: segs[found * 4 + 2] + 1, col: segs[found * 4 + 3] + 1 };
  }

  /** Line `line` (1-based) of an original file, from sourcesContent, trimmed; undefined when not shipped. */
  sourceLine(file: string, line: number): string | undefined {
    const i = this.files.indexOf(file);
    const content = i >= 0 ? this.json.sourcesContent?.[i] : null;
    return content?.split('\n')[line - 1]?.trim() || undefined;
  }
}

interface CallSite {
  getFileName(): string | null;
  getLineNumber(): number | null;
  getColumnNumber(): number | null;
  getFunctionName(): string | null;
}

/**
 * Makes every Error's stack (V8: Chrome, Edge) name original files: frames in `bundleUrl` are mapped through
 * `map`, others kept. Returns a function that puts the previous formatter back.
 */
export function installStackMapping(map: SourceMap, bundleUrl: string): () => void {
  const E = Error as ErrorConstructor & { prepareStackTrace?: (error: Error, frames: CallSite[]) => unknown };
  const previous = E.prepareStackTrace;
  E.prepareStackTrace = (error: Error, frames: CallSite[]) => {
    const head = `${error.name}${error.message ? `: ${error.message}` : ''}`;
    const lines = frames.map((f) => {
      const fn = f.getFunctionName() ?? '<anonymous>';
      const file = f.getFileName() ?? '<anonymous>';
      const line = f.getLineNumber() ?? 0;
      const col = f.getColumnNumber() ?? 0;
      const o = file === bundleUrl ? map.original(line, col) : null;
      return `    at ${fn} (${o ? `${o.file}:${o.line}:${o.col}` : `${file}:${line}:${col}`})`;
    });
    return [head, ...lines].join('\n');
  };
  return () => {
    E.prepareStackTrace = previous;
  };
}
