// Safetensors reader/writer, hand-written: no maintained npm library for the format exists.
//
// Format (huggingface/safetensors): 8-byte little-endian u64 header length N, N bytes of UTF-8
// JSON header, then the data section. The header maps tensor names to
// {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data section) and may hold a
// "__metadata__" string->string map. Validation follows the Rust crate: the tensors' byte ranges
// must tile the data section exactly (no overlaps, no holes). In addition each tensor must start
// at a multiple of its item size. Every problem is a one-line KilnError KILN_E005.
//
// Typed arrays use the host's byte order; like every WebGPU host we assume little-endian.
// toKilnTensor and fromKilnTensor convert to and from kiln's dtypes: float tensors read as f32 or f16
// (F16/BF16 decoded, rounding to f16 through ir/f16.ts) and written as F32 or F16 bit patterns.

import { DTYPE_INFO, type DType, type HostArray } from '../ir/dtypes.ts';
import { KilnError } from '../ir/errors.ts';
import { f16Bits, f16Value } from '../ir/f16.ts';
import { writeFileAtomic } from './files.ts';
import { nodeFs } from './node-only.ts';

export type StDType =
  | 'F32' | 'F64' | 'I32' | 'I64' | 'BOOL' | 'U8' | 'F16' | 'BF16' | 'I8' | 'I16' | 'U16' | 'U32' | 'U64';

/** Raw element data: a copy of the tensor's bytes as a typed array (F16/BF16 as raw Uint16 bits). */
export type StData =
  | Float32Array | Float64Array | Int32Array | BigInt64Array | BigUint64Array | Uint8Array
  | Int8Array | Int16Array | Uint16Array | Uint32Array;

export interface StTensor {
  dtype: StDType;
  shape: number[];
  data: StData;
}

export interface SafetensorsFile {
  tensors: Map<string, StTensor>;
  metadata: Record<string, string>;
}

export interface StTensorInput {
  dtype: StDType;
  shape: number[];
  data: ArrayBufferView;
}

const ITEM_SIZE: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

const MAX_HEADER_BYTES = 100_000_000;

function isStDType(s: unknown): s is StDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(ITEM_SIZE, s);
}

function bad(fileName: string, what: string): KilnError {
  return new KilnError('KILN_E005', `bad checkpoint ${fileName}: ${what}`);
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Copy `byteLength` bytes starting at `src` into a fresh typed array of the dtype. */
function copyTyped(dtype: StDType, src: Uint8Array): StData {
  const n = src.byteLength / ITEM_SIZE[dtype];
  const out: StData = (() => {
    switch (dtype) {
      case 'F32': return new Float32Array(n);
      case 'F64': return new Float64Array(n);
      case 'I32': return new Int32Array(n);
      case 'I64': return new BigInt64Array(n);
      case 'U64': return new BigUint64Array(n);
      case 'I16': return new Int16Array(n);
      case 'I8': return new Int8Array(n);
      case 'U32': return new Uint32Array(n);
      case 'U16': case 'F16': case 'BF16': return new Uint16Array(n);
      case 'U8': case 'BOOL': return new Uint8Array(n);
    }
  })();
  new Uint8Array(out.buffer).set(src);
  return out;
}

export function parseSafetensors(bytes: Uint8Array, fileName: string): SafetensorsFile {
  if (bytes.byteLength < 8) {
    throw bad(fileName, `file has ${bytes.byteLength} bytes, shorter than the 8-byte header length; not a safetensors file`);
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw bad(fileName, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit; not a safetensors file`);
  }
  const headerLen = Number(n);
  if (8 + headerLen > bytes.byteLength) {
    throw bad(fileName, `header length ${headerLen} runs past the end of the ${bytes.byteLength}-byte file; the file is truncated`);
  }

  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
    header = JSON.parse(text);
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw bad(fileName, `header is not valid UTF-8 JSON (${why})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw bad(fileName, 'header is not a JSON object');
  }
  const entries = Object.entries(header as Record<string, unknown>);
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;

  // Validate everything first; build tensors only once the whole header checks out.
  let metadata: Record<string, string> = {};
  const infos: { key: string; dtype: StDType; shape: number[]; begin: number; end: number }[] = [];
  for (const [key, value] of entries) {
    if (key === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw bad(fileName, '"__metadata__" is not a string-to-string map');
      }
      for (const [mk, mv] of Object.entries(value)) {
        if (typeof mv !== 'string') {
          throw bad(fileName, `"__metadata__" entry ${JSON.stringify(mk)} is not a string`);
        }
      }
      metadata = Object.fromEntries(Object.entries(value as Record<string, string>));
      continue;
    }
    const k = JSON.stringify(key);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw bad(fileName, `tensor ${k} entry is not an object`);
    }
    const { dtype, shape, data_offsets: offs } = value as Record<string, unknown>;
    if (!isStDType(dtype)) {
      throw bad(fileName, `tensor ${k} has unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!isShape(shape)) {
      throw bad(fileName, `tensor ${k} has shape ${JSON.stringify(shape)}, not an array of non-negative integers`);
    }
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]
    ) {
      throw bad(fileName, `tensor ${k} has data_offsets ${JSON.stringify(offs)}, not two integers [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLen) {
      throw bad(fileName, `tensor ${k} has data_offsets [${begin},${end}] beyond the ${dataLen}-byte data section; the file is truncated`);
    }
    const need = numelOf(shape) * ITEM_SIZE[dtype];
    if (end - begin !== need) {
      throw bad(fileName, `tensor ${k} has ${end - begin} bytes but shape ${fmtShape(shape)} of ${dtype} needs ${need}; re-export the checkpoint`);
    }
    if (begin % ITEM_SIZE[dtype] !== 0) {
      throw bad(fileName, `tensor ${k} is misaligned: begin offset ${begin} is not a multiple of the ${ITEM_SIZE[dtype]}-byte ${dtype} item size`);
    }
    infos.push({ key, dtype, shape: [...shape], begin, end });
  }

  // The ranges must tile [0, dataLen) exactly.
  const sorted = [...infos].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: string | undefined;
  for (const t of sorted) {
    if (t.begin < pos) {
      throw bad(fileName, `tensor ${JSON.stringify(t.key)} bytes [${t.begin},${t.end}) overlap tensor ${JSON.stringify(prev)} (ends at ${pos})`);
    }
    if (t.begin > pos) {
      throw bad(fileName, `data bytes [${pos},${t.begin}) before tensor ${JSON.stringify(t.key)} belong to no tensor; the data section must be covered exactly`);
    }
    pos = t.end;
    prev = t.key;
  }
  if (pos !== dataLen) {
    throw bad(fileName, `data bytes [${pos},${dataLen}) at the end belong to no tensor; the data section must be covered exactly`);
  }

  const tensors = new Map<string, StTensor>();
  for (const t of infos) {
    const src = bytes.subarray(dataStart + t.begin, dataStart + t.end);
    tensors.set(t.key, { dtype: t.dtype, shape: t.shape, data: copyTyped(t.dtype, src) });
  }
  return { tensors, metadata };
}

function invalid(what: string): KilnError {
  return new KilnError('KILN_E011', `serializeSafetensors: ${what}`);
}

/**
 * Serialize tensors. The header lists them in insertion order. Data is laid out contiguously,
 * in insertion order within each item size, larger item sizes first, so every tensor is aligned
 * (for the usual all-F32 checkpoint this is plain insertion order).
 */
export function serializeSafetensors(
  tensors: Map<string, StTensorInput> | Record<string, StTensorInput>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  for (const [key, t] of list) {
    const k = JSON.stringify(key);
    if (key === '__metadata__') throw invalid('"__metadata__" cannot be a tensor name');
    if (!isStDType(t.dtype)) throw invalid(`tensor ${k} has unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!isShape(t.shape)) throw invalid(`tensor ${k} has shape ${JSON.stringify(t.shape)}, not an array of non-negative integers`);
    const need = numelOf(t.shape) * ITEM_SIZE[t.dtype];
    if (t.data.byteLength !== need) {
      throw invalid(`tensor ${k} has ${t.data.byteLength} bytes but shape ${fmtShape(t.shape)} of ${t.dtype} needs ${need}`);
    }
  }
  for (const [mk, mv] of Object.entries(metadata ?? {})) {
    if (typeof mv !== 'string') throw invalid(`metadata entry ${JSON.stringify(mk)} is not a string`);
  }

  // Assign offsets: stable sort by item size, largest first.
  const layout = [...list].sort((a, b) => ITEM_SIZE[b[1].dtype] - ITEM_SIZE[a[1].dtype]);
  const offsets = new Map<string, [number, number]>();
  let pos = 0;
  for (const [key, t] of layout) {
    offsets.set(key, [pos, pos + t.data.byteLength]);
    pos += t.data.byteLength;
  }
  const dataLen = pos;

  // Build the JSON by hand so that integer-like keys keep their insertion order.
  const parts: string[] = [];
  if (metadata && Object.keys(metadata).length > 0) {
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  for (const [key, t] of list) {
    const entry = { dtype: t.dtype, shape: t.shape, data_offsets: offsets.get(key) };
    parts.push(`${JSON.stringify(key)}:${JSON.stringify(entry)}`);
  }
  let headerBytes = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(headerBytes.byteLength / 8) * 8; // 8 + padded is 8-byte aligned
  if (padded !== headerBytes.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(headerBytes);
    headerBytes = p;
  }

  const out = new Uint8Array(8 + headerBytes.byteLength + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  out.set(headerBytes, 8);
  const dataStart = 8 + headerBytes.byteLength;
  for (const [key, t] of list) {
    const src = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(src, dataStart + offsets.get(key)![0]);
  }
  return out;
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  const { readFile } = await nodeFs();
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw bad(path, `cannot read the file (${why})`);
  }
  return parseSafetensors(bytes, path);
}

/** Serializes and writes atomically (runtime/files.ts): a crash mid-write leaves the old file or the new one. */
export async function writeSafetensors(
  path: string,
  tensors: Map<string, StTensorInput> | Record<string, StTensorInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

/**
 * What float tensors become on reading. 'f32' (the default): every float tensor as f32 (F16 and BF16
 * exactly, F64 rounded). 'f16', for a model that runs in f16: every float tensor as f16 (F16 exactly,
 * BF16, F32 and F64 rounded once to nearest even). 'as-stored': F16 as f16, the rest as f32 (kiln has
 * no bf16 or f64 dtype; BF16 is exact in f32).
 */
export type LoadFloats = 'f32' | 'f16' | 'as-stored';

/** What float tensors are written as: 'as-held' (the default) each in its own dtype (f16 as F16, f32 as F32), or all as F32 or all as F16. */
export type SaveFloats = 'as-held' | 'f32' | 'f16';

/** Where a float's value lies beyond the target dtype's range, a finite value that the conversion would make inf. */
function overflow(what: string, value: number, index: number, dtype: DType): string {
  return `${what} holds ${value} at flat index ${index}, beyond ${dtype}'s range (largest finite ${DTYPE_INFO[dtype].max}), so it would become inf`;
}

/** The elements of a float tensor as numbers: F16 and BF16 decoded from their bit patterns (both exact), F32 and F64 as they are. */
function floatValues(t: StTensor): ArrayLike<number> {
  switch (t.dtype) {
    case 'F16': return Float32Array.from(t.data as Uint16Array, f16Value);
    case 'BF16': {
      const h = t.data as Uint16Array;
      const bits = new Uint32Array(h.length);
      for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16; // bf16 is the top half of an f32
      return new Float32Array(bits.buffer);
    }
    default: return t.data as Float32Array | Float64Array;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * `x` rounded once to f16 (nearest, ties to even), as bits. f16Bits rounds an f32; a double that is no
 * f32 goes to f32 rounding to odd first (truncate, then set the last bit), which leaves an f16 tie a tie
 * only if it is one: f32 keeps 13 bits more than f16, more than the 2 this needs.
 */
function f16BitsOfDouble(x: number): number {
  f32Scratch[0] = x; // to nearest
  if (f32Scratch[0] === x || !Number.isFinite(f32Scratch[0])) return f16Bits(x);
  if (Math.abs(f32Scratch[0]) > Math.abs(x)) u32Scratch[0] -= 1; // one step toward zero: the truncation
  u32Scratch[0] |= 1;
  return f16Bits(f32Scratch[0]);
}

/**
 * Convert to kiln's host dtypes: F32/F64/F16/BF16 -> Float32Array, as f32 or f16 per `floats` (see
 * LoadFloats; a finite value that would become inf in f16 is refused with KILN_E006 naming the tensor);
 * I32/I64/I16/I8/U8/U16/U32/U64 -> Int32Array ('i32', error if a value does not fit);
 * BOOL -> Uint8Array ('bool', error if a byte is not 0 or 1).
 */
export function toKilnTensor(
  t: StTensor,
  fileName: string,
  key: string,
  opts: { floats?: LoadFloats } = {},
): { dtype: DType; shape: number[]; data: Float32Array | Int32Array | Uint8Array } {
  const shape = [...t.shape];
  const k = JSON.stringify(key);
  const src = t.data;
  switch (t.dtype) {
    case 'F32': case 'F64': case 'F16': case 'BF16': {
      const floats = opts.floats ?? 'f32';
      const values = floatValues(t);
      if (floats === 'f32' || (floats === 'as-stored' && t.dtype !== 'F16')) return { dtype: 'f32', shape, data: Float32Array.from(values) };
      if (t.dtype === 'F16') return { dtype: 'f16', shape, data: values as Float32Array };
      const out = new Float32Array(values.length);
      for (let i = 0; i < values.length; i++) {
        out[i] = f16Value(f16BitsOfDouble(values[i]));
        if (!Number.isFinite(out[i]) && Number.isFinite(values[i])) {
          throw new KilnError('KILN_E006', `${fileName}: ${overflow(`tensor ${k} of ${t.dtype}`, values[i], i, 'f16')}; load it into a model that runs in f32`);
        }
      }
      return { dtype: 'f16', shape, data: out };
    }
    case 'I32': case 'I16': case 'I8': case 'U8': case 'U16':
      return { dtype: 'i32', shape, data: Int32Array.from(src as Int32Array) };
    case 'U32': case 'I64': case 'U64': {
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        if (v < -2147483648 || v > 2147483647) {
          throw bad(fileName, `tensor ${k} of ${t.dtype} holds ${v} at flat index ${i}, which does not fit in i32`);
        }
        out[i] = Number(v);
      }
      return { dtype: 'i32', shape, data: out };
    }
    case 'BOOL': {
      const b = src as Uint8Array;
      const i = b.findIndex((v) => v > 1);
      if (i >= 0) throw bad(fileName, `tensor ${k} of BOOL holds byte ${b[i]} at flat index ${i}, not 0 or 1`);
      return { dtype: 'bool', shape, data: Uint8Array.from(b) };
    }
  }
}

/**
 * A kiln host tensor as safetensors input, toKilnTensor's inverse: i32 as I32, bool as BOOL, floats per
 * `floats` (SaveFloats). F32 holds f16 values exactly; F16 holds each value's 2-byte bit pattern, rounded
 * to nearest even where the value is no f16 (an f32 saved as F16). A finite value beyond f16's range is
 * refused with KILN_E011 naming the tensor, not written as inf.
 */
export function fromKilnTensor(
  t: { dtype: DType; shape: readonly number[]; data: HostArray },
  key: string,
  floats: SaveFloats = 'as-held',
): StTensorInput {
  const info = DTYPE_INFO[t.dtype];
  const shape = [...t.shape];
  if (!info.isFloat) return { dtype: info.safetensors, shape, data: t.data };
  const dtype = floats === 'as-held' ? t.dtype : floats;
  if (dtype === 'f32') return { dtype: 'F32', shape, data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data) };
  const bits = new Uint16Array(t.data.length);
  for (let i = 0; i < bits.length; i++) {
    bits[i] = f16BitsOfDouble(t.data[i]);
    if ((bits[i] & 0x7fff) === 0x7c00 && Number.isFinite(t.data[i])) {
      throw new KilnError('KILN_E011', `saving as F16: ${overflow(`tensor ${JSON.stringify(key)}`, t.data[i], i, 'f16')}; save it as F32`);
    }
  }
  return { dtype: 'F16', shape, data: bits };
}
