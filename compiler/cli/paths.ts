// A command's output file may not be one of its input files: `kiln eval --out w.safetensors --weights
// w.safetensors` would replace the checkpoint it reads. Checked before any work, on the files
// themselves (symlinks and hard links included), not on how their paths are spelled.

import { type Stats, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { KilnError } from '../../ir/errors.ts';
import { type CommandSpec, type ParsedArgs, stringFlag } from './args.ts';

/** Throws KILN_E017 when a flag marked `file: 'output'` names the same file as MODEL.ts or a flag marked `file: 'input'`. */
export function refuseOutputOverInput(spec: CommandSpec, args: ParsedArgs): void {
  const inputs: [string, string][] = spec.positionals.flatMap((name, i) => (name === 'MODEL.ts' && args.positionals[i] ? [[name, args.positionals[i]] as [string, string]] : []));
  for (const f of spec.flags) {
    const path = stringFlag(args, f.name);
    if (f.file === 'input' && path !== undefined) inputs.push([`--${f.name}`, path]);
  }
  for (const f of spec.flags) {
    const out = stringFlag(args, f.name);
    if (f.file !== 'output' || out === undefined) continue;
    const clash = inputs.find(([, input]) => sameFile(out, input));
    if (clash) {
      throw new KilnError('KILN_E017', `kiln ${spec.name}: --${f.name} ${out} is the same file as ${clash[0]} ${clash[1]}, which it would overwrite; write to another path`);
    }
  }
}

/** Two existing paths are the same file when device and inode agree; otherwise compare where they resolve to. */
export function sameFile(a: string, b: string): boolean {
  const [sa, sb] = [statOrNull(a), statOrNull(b)];
  if (sa && sb) return sa.dev === sb.dev && sa.ino === sb.ino;
  return resolvedPath(a) === resolvedPath(b);
}

function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null; // missing or unreadable: compared by path instead
  }
}

/** The real path of `p`, or, when it does not exist yet, its folder's real path joined with its name. */
function resolvedPath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    try {
      return join(realpathSync(dirname(resolve(p))), basename(p));
    } catch {
      return resolve(p);
    }
  }
}
