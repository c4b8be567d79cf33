// Imported first by main.ts: fetches the bundle's source map (kiln serve builds main.js.map beside
// main.js) and installs it as the stack formatter before kiln traces anything, so kiln's callerLoc, which
// reads the first stack frame outside kiln's own folders, sees examples/nanogpt/model.ts:96 rather than
// main.js:6417. Without a map (a bundle built without one) stacks stay as the browser writes them.

import { SourceMap, type SourceMapJson, installStackMapping } from './sourcemap.ts';

/** The folder the original files are named under ("/kiln/examples/nanogpt/model.ts"); the page shows paths after it. */
export const BUNDLE_ROOT = '/kiln/';

async function loadMap(): Promise<SourceMap | null> {
  try {
    const res = await fetch('main.js.map');
    if (!res.ok) return null;
    // main.js lies in examples/browser/ of the checkout; the map's sources are relative to it.
    const map = new SourceMap((await res.json()) as SourceMapJson, `${BUNDLE_ROOT}examples/browser/`);
    installStackMapping(map, new URL('main.js', location.href).href);
    return map;
  } catch (e) {
    console.warn(`kiln: main.js.map could not be read, so source lines name main.js: ${(e as Error).message}`);
    return null;
  }
}

/** The bundle's source map, installed; null when the page has none. */
export const sourceMap: SourceMap | null = await loadMap();
