// Every file kiln writes (checkpoints, `kiln eval --out`, dumps, SVGs, benchmark JSON) goes through
// writeFileAtomic, so a crash or a kill mid-write leaves the old file or the new one, never a torn one.
//
// Written by hand rather than with npm's write-file-atomic: that package does not fsync the folder,
// and it installs its own exit and signal handlers, where train.ts needs to own SIGINT and SIGTERM.
// node:fs is imported on use (runtime/node-only.ts), so the browser bundle (which reaches this file
// through safetensors.ts) carries no Node import.

import { nodeFs, nodePath } from './node-only.ts';

/**
 * Writes `data` to `path` atomically: into a temporary file in the same folder (same file system, so
 * the rename is atomic), fsynced, then renamed over `path`, then the folder fsynced so the rename
 * itself survives a power cut. On any failure the temporary file is removed and the error rethrown;
 * `path` is untouched. A symlink at `path` is followed (its target is replaced, not the link), and an
 * existing file keeps its permissions.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const fs = await nodeFs();
  const { basename, dirname, join } = await nodePath();
  const target = await fs.realpath(path).catch(() => path);
  const mode = await fs.stat(target).then((s) => s.mode & 0o7777, () => undefined);
  const temp = join(dirname(target), tempName(basename(target)));
  let handle: import('node:fs/promises').FileHandle | undefined;
  try {
    handle = await fs.open(temp, 'wx'); // wx: never reuse a file someone else is writing
    if (mode !== undefined) await handle.chmod(mode);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(temp, target);
  } catch (e) {
    await handle?.close().catch(() => undefined);
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw e;
  }
  await syncFolder(fs, dirname(target));
}

/** `.NAME.PID.RANDOM.tmp`: hidden, beside the target, unique per process and call. */
export function tempName(name: string): string {
  return `.${name}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
}

/** The file a path to one of writeFileAtomic's temporaries stands for (`dir/.NAME.PID.RANDOM.tmp` -> `dir/NAME`); undefined for any other path. */
export function tempTarget(path: string): string | undefined {
  const temp = /^(.*\/)?\.(.+)\.\d+\.[a-z0-9]+\.tmp$/.exec(path);
  return temp ? `${temp[1] ?? ''}${temp[2]}` : undefined;
}

/** Whether `file` is one of writeFileAtomic's temporaries for the file named `name`. */
export function isTempOf(file: string, name: string): boolean {
  return file.startsWith(`.${name}.`) && file.endsWith('.tmp');
}

/** Errors of platforms that cannot open or fsync a folder (Windows, some network file systems). */
const FOLDER_SYNC_UNSUPPORTED = new Set(['EISDIR', 'EPERM', 'EACCES', 'EINVAL', 'EBADF', 'ENOTSUP']);

/** fsync on the folder makes the rename durable; where a folder cannot be synced, the file's own fsync is what there is. */
async function syncFolder(fs: typeof import('node:fs/promises'), folder: string): Promise<void> {
  let handle: import('node:fs/promises').FileHandle | undefined;
  try {
    handle = await fs.open(folder, 'r');
    await handle.sync();
  } catch (e) {
    if (!FOLDER_SYNC_UNSUPPORTED.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
