// kiln's browser entry (package.json's `browser` condition): the same API as index.ts. Built by
// bin/build.mjs into one bundle, dist/index.browser.js, in which runtime/node-only.ts (the file
// system and Dawn, the `webgpu` package) is swapped for runtime/node-only.browser.ts: the bundle
// names no Node module, so a bundler with default settings builds a page from it.

export * from './index.ts';
