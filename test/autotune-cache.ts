// The autotune tests' disk cache: a fresh KILN_CACHE_DIR for a test file (or each test), removed after,
// so that measured picks neither come from nor go to the user's ~/.cache/kiln.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Points KILN_CACHE_DIR at a new temporary folder; returns it and a function that removes it and unsets the variable. */
export function tempAutotuneCache(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-autotune-'));
  process.env.KILN_CACHE_DIR = dir;
  return {
    dir,
    remove: () => {
      delete process.env.KILN_CACHE_DIR;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
