// node-only.ts as kiln's browser build has it (bin/build.mjs swaps the file): no Node module named, and a
// call, which only a Node code path makes (isNode() guards them), says so.

import type { Dawn } from './node-only.ts';

function nodeOnly(what: string): never {
  throw new Error(`${what} needs Node; this is kiln's browser build`);
}

export type { Dawn };
export const nodeFs = (): Promise<typeof import('node:fs/promises')> => nodeOnly('reading and writing files');
export const nodePath = (): Promise<typeof import('node:path')> => nodeOnly('file paths');
export const dawn = (): Promise<Dawn> => nodeOnly('Dawn (the webgpu package)');
