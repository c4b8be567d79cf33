// Guards: what a compilation assumed, checked before every call (torch.compile's guards). A compilation
// holds for one input signature (dtype and shape of each tensor argument, the value of every other
// one), one set of training flags (dropout is traced in or not), one layout of the model's state (the
// name and type of every parameter and buffer: the graph's leaves), and the values of the buffers the
// passes read at compile time (constant folding and the causal proof fold nanoGPT's mask in).
// Parameters and the other buffers are fed from the model's current tensors on every call, so new
// values, or a new tensor of the same type, need no recompile.
//
// Checking folded values is cheap: in the common case the buffer is the same tensor object at the same
// version (Tensor.version, bumped by every write path); only when either changed is its data
// fingerprinted and compared with what the passes read.

import type { HostTensor } from '../ir/host.ts';
import { formatType } from '../ir/types.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';

/** How many compilations one key keeps (torch.compile's cache_size_limit): a mask flipping back and forth reuses them. */
const PER_KEY_LIMIT = 8;

/** What a compilation was built for, part by part, so a miss can say which part changed. */
export interface GuardKey {
  /** forward()'s parameter names, for messages. */
  readonly argNames: readonly string[];
  /** `i32[2,24]`: each forward() argument's guarded value. */
  readonly args: readonly string[];
  /** `tte`: each module's training flag, in module order. */
  readonly modes: string;
  /** `transformer.wte.weight: f32[65,32]`: every parameter and buffer, by state-dict key. */
  readonly state: readonly string[];
}

/**
 * The guarded value of a forward() argument: a tensor's dtype and shape, any other value itself. With a
 * dynamic dim (compiler/dynamic.ts), a tensor's size there is `T`, whatever it is: its range is checked
 * when the graph is instantiated.
 */
export function guardedValue(arg: unknown, dynamicDim?: number): string {
  if (!(arg instanceof Tensor)) return JSON.stringify(arg) ?? 'undefined';
  if (dynamicDim === undefined || arg.shape.length <= dynamicDim) return formatType(arg.type);
  return `${arg.dtype}[${arg.shape.map((d, i) => (i === dynamicDim ? 'T' : d)).join(',')}]`;
}

/** The key of a call: its arguments (named), the model's training flags and the layout of its state. */
export function guardKey(model: Module, state: ReadonlyMap<string, Tensor>, args: readonly unknown[], argNames: readonly string[], dynamicDim?: number): GuardKey {
  return {
    argNames: args.map((_, i) => argNames[i] ?? `arg${i}`),
    args: args.map((a) => guardedValue(a, dynamicDim)),
    modes: [...model.namedModules()].map(([, m]) => (m.training ? 't' : 'e')).join(''),
    state: [...state].map(([name, t]) => `${name}: ${formatType(t.type)}`),
  };
}

/** A key as one string: equal strings, the same guards. */
export const keyText = (k: GuardKey) => `${k.args.join(', ')} | modes ${k.modes} | ${k.state.join(', ')}`;

/** A buffer the passes read while compiling: which tensor, at which version, and what its data was. */
interface FoldedRead {
  tensor: Tensor;
  version: number;
  readonly type: string;
  readonly fingerprint: string;
}

interface Entry<C> {
  readonly compilation: C;
  readonly folded: ReadonlyMap<string, FoldedRead>;
}

/** A hash of a tensor's bytes (two 32-bit FNV-1a lanes over 4-byte words): equal data, equal fingerprint. */
export function fingerprint(host: HostTensor): string {
  const bytes = new Uint8Array(host.data.buffer, host.data.byteOffset, host.data.byteLength);
  const words = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2) : Uint32Array.from({ length: bytes.length >> 2 }, (_, i) => bytes[4 * i] | (bytes[4 * i + 1] << 8) | (bytes[4 * i + 2] << 16) | (bytes[4 * i + 3] << 24));
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ bytes.length;
  for (let i = 0; i < words.length; i++) {
    a = Math.imul(a ^ words[i], 0x01000193);
    b = Math.imul(b ^ words[i] ^ (i * 0x9e3779b9), 0x85ebca6b);
  }
  for (let i = words.length * 4; i < bytes.length; i++) a = Math.imul(a ^ bytes[i], 0x01000193);
  return `${(a >>> 0).toString(16)}${(b >>> 0).toString(16)}:${bytes.length}`;
}

/** The tensor's host copy, read back from its device when it has none (a model built after useBackend('webgpu')). */
export async function hostCopy(t: Tensor): Promise<HostTensor> {
  const host = t.readHost();
  if (host) return host;
  const read = { type: t.type, data: await t.data() };
  t.cacheCopy({ host: read });
  return read;
}

/**
 * The compilations of one compiled function, by guard key, each with the buffer values it folded in.
 * `find` answers a call with a compilation whose guards all hold, or says why none does.
 */
export class GuardedCache<C> {
  private readonly entries = new Map<string, Entry<C>[]>();
  private lastKey: GuardKey | undefined;

  /**
   * A compilation whose guards all hold for this call; otherwise why not (what changed since the last
   * call, for the recompiles log), or no reason when nothing was compiled before.
   */
  async find(key: GuardKey, state: ReadonlyMap<string, Tensor>): Promise<{ hit: C } | { miss: string | undefined }> {
    const candidates = this.entries.get(keyText(key)) ?? [];
    let stale: string | undefined;
    for (const entry of candidates) {
      const changed = await changedFold(entry.folded, state);
      if (!changed) {
        this.lastKey = key;
        return { hit: entry.compilation };
      }
      stale ??= changed;
    }
    return { miss: stale ?? (this.lastKey && changedKey(this.lastKey, key)) };
  }

  /** Remembers a compilation and the reads of `reader` that it was built from. */
  add(key: GuardKey, compilation: C, reader: BufferReader): void {
    const list = this.entries.get(keyText(key)) ?? [];
    list.unshift({ compilation, folded: reader.reads });
    if (list.length > PER_KEY_LIMIT) list.pop();
    this.entries.set(keyText(key), list);
    this.lastKey = key;
  }

  get size(): number {
    return [...this.entries.values()].reduce((n, l) => n + l.length, 0);
  }
}

/** What the passes read of the model's buffers while compiling (PassOptions.bufferValue), recorded as it is read. */
export class BufferReader {
  readonly reads = new Map<string, FoldedRead>();
  constructor(private readonly state: ReadonlyMap<string, Tensor>) {}

  /** Host copies of every buffer first, so the passes can read them: call before compiling. */
  static async of(state: ReadonlyMap<string, Tensor>, model: Module): Promise<BufferReader> {
    for (const [, b] of model.namedBuffers()) await hostCopy(b);
    return new BufferReader(state);
  }

  readonly value = (name: string): HostTensor | undefined => {
    const t = this.state.get(name);
    const host = t?.readHost();
    if (!t || !host) return host;
    if (!this.reads.has(name)) this.reads.set(name, { tensor: t, version: t.version, type: formatType(t.type), fingerprint: fingerprint(host) });
    return host;
  };
}

/** Why a folded buffer no longer holds what was folded in, or undefined when every one does. */
async function changedFold(folded: ReadonlyMap<string, FoldedRead>, state: ReadonlyMap<string, Tensor>): Promise<string | undefined> {
  for (const [name, read] of folded) {
    const t = state.get(name);
    if (t === read.tensor && t.version === read.version) continue;
    const how = !t ? 'was removed' : t !== read.tensor ? 'is a new tensor' : `was written (version ${read.version} -> ${t.version})`;
    if (t && formatType(t.type) === read.type && fingerprint(await hostCopy(t)) === read.fingerprint) {
      [read.tensor, read.version] = [t, t.version]; // same values: no need to look again until the next write
      continue;
    }
    return `buffer ${name} ${how} with new values; the compiled graph folded its old values in (constant folding, causal proof)`;
  }
  return undefined;
}

/** `idx: i32[2,24] -> i32[2,12]`: the parts of the key that differ, for the recompiles log. */
function changedKey(before: GuardKey, after: GuardKey): string {
  const parts: string[] = [];
  for (let i = 0; i < Math.max(before.args.length, after.args.length); i++) {
    if (before.args[i] !== after.args[i]) parts.push(`${after.argNames[i] ?? before.argNames[i]}: ${before.args[i] ?? 'absent'} -> ${after.args[i] ?? 'absent'}`);
  }
  if (before.modes !== after.modes) parts.push(`training flags ${before.modes} -> ${after.modes}`);
  const types = (state: readonly string[]) => new Map(state.map((s) => [s.slice(0, s.lastIndexOf(': ')), s.slice(s.lastIndexOf(': ') + 2)]));
  const [typesBefore, typesAfter] = [types(before.state), types(after.state)];
  for (const [name, type] of typesAfter) {
    const was = typesBefore.get(name);
    if (was !== type) parts.push(was ? `${name}: ${was} -> ${type}` : `${name}: ${type} is new`);
  }
  for (const name of typesBefore.keys()) if (!typesAfter.has(name)) parts.push(`${name} is gone`);
  return parts.join('; ') || 'a new compilation';
}
