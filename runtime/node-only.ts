// The Node-only modules kiln's core loads on use: the file system (checkpoints, atomic writes) and Dawn
// (the `webgpu` package, WebGPU for Node). Everything Node-only that the library (not the CLI) reaches
// goes through this file, so that kiln's browser build (bin/build.mjs, dist/index.browser.js) can swap
// it for node-only.browser.ts and a browser bundle of kiln names none of them.

/** What kiln uses of the `webgpu` package (an optional peer dependency; typed here so kiln's declarations do not need it). */
export interface Dawn {
  create(options: string[]): GPU;
  globals: object;
}

export const nodeFs = (): Promise<typeof import('node:fs/promises')> => import('node:fs/promises');
export const nodePath = (): Promise<typeof import('node:path')> => import('node:path');
export const dawn = async (): Promise<Dawn> => (await import('webgpu')) as Dawn;
