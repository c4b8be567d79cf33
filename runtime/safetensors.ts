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

import type { DType } from '../ir/dtypes.ts';
import { KilnError } from '../ir/errors.ts';
import { writeFileAtomic } from './files.ts';

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
  const { readFile } = await import('node:fs/promises');
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

function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Convert to kiln's host dtypes: F32/F64/F16/BF16 -> Float32Array ('f32');
 * I32/I64/I16/I8/U8/U16/U32/U64 -> Int32Array ('i32', error if a value does not fit);
 * BOOL -> Uint8Array ('bool', error if a byte is not 0 or 1).
 */
export function toKilnTensor(
  t: StTensor,
  fileName: string,
  key: string,
): { dtype: DType; shape: number[]; data: Float32Array | Int32Array | Uint8Array } {
  const shape = [...t.shape];
  const k = JSON.stringify(key);
  const src = t.data;
  switch (t.dtype) {
    case 'F32': case 'F64':
      return { dtype: 'f32', shape, data: Float32Array.from(src as Float32Array | Float64Array) };
    case 'F16': {
      const h = src as Uint16Array;
      const out = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) out[i] = f16ToF32(h[i]);
      return { dtype: 'f32', shape, data: out };
    }
    case 'BF16': {
      const h = src as Uint16Array;
      const out = new Float32Array(h.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
      return { dtype: 'f32', shape, data: out };
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
