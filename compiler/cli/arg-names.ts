// forward()'s parameter names as the user wrote them. bin/kiln.mjs bundles the user's model with kiln into
// one file, and esbuild renames a parameter that shares its name with a top-level symbol elsewhere in the
// bundle: `forward(q, k, v)` runs as `forward(q3, k3, v3)`. The bundle's inline source map keeps each
// renamed identifier's original name, so the names are read back from it; `kiln eval` then feeds the
// inputs file's `q`, `k`, `v`, and the IR's inputs carry those names.

import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';

interface Bundle {
  readonly text: string;
  readonly map: SourceMap;
}

const MAP_PREFIX = '//# sourceMappingURL=data:application/json;base64,';
let bundle: Bundle | null | undefined;
const cache = new WeakMap<object, string[] | undefined>();

/** The running bundle (this module's own file) and its source map; null when not bundled (vitest runs the .ts files). */
function runningBundle(): Bundle | null {
  if (bundle !== undefined) return bundle;
  bundle = null;
  try {
    const text = readFileSync(fileURLToPath(import.meta.url), 'utf8');
    const at = text.lastIndexOf(MAP_PREFIX);
    if (at >= 0) {
      const payload = Buffer.from(text.slice(at + MAP_PREFIX.length).trim(), 'base64').toString('utf8');
      bundle = { text, map: new SourceMap(JSON.parse(payload)) };
    }
  } catch {
    bundle = null; // unreadable: the bundled names stand
  }
  return bundle;
}

/** The source's names of `fn`'s parameters, given their bundled names; undefined when the bundle cannot say. */
export function sourceArgNames(fn: (...args: never[]) => unknown, bundled: readonly string[]): string[] | undefined {
  if (cache.has(fn)) return cache.get(fn);
  const names = lookUp(fn.toString(), bundled);
  cache.set(fn, names);
  return names;
}

function lookUp(source: string, bundled: readonly string[]): string[] | undefined {
  const b = runningBundle();
  const start = b?.text.indexOf(source) ?? -1;
  if (!b || start < 0 || b.text.indexOf(source, start + 1) >= 0) return undefined; // not in the bundle, or not only once
  let from = source.indexOf('(');
  return bundled.map((name) => {
    const at = source.slice(from).search(new RegExp(`(?<![\\w$])${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\w$])`)) + from;
    if (at < from) return name;
    from = at + name.length;
    const [line, column] = lineAndColumn(b.text, start + at);
    const entry = b.map.findEntry(line, column) as { generatedLine?: number; generatedColumn?: number; name?: string };
    const exact = entry.generatedLine === line && entry.generatedColumn === column;
    return exact && entry.name ? entry.name : name;
  });
}

/** Zero-based line and column (UTF-16 units, as source maps count) of `index` in `text`. */
function lineAndColumn(text: string, index: number): [number, number] {
  let line = 0;
  let lineStart = 0;
  for (let nl = text.indexOf('\n'); nl >= 0 && nl < index; nl = text.indexOf('\n', nl + 1)) {
    line++;
    lineStart = nl + 1;
  }
  return [line, index - lineStart];
}
