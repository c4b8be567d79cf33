import { describe, it, expect } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnError } from '../ir/errors.ts';
import {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  toKilnTensor,
  writeSafetensors,
  type StTensorInput,
} from '../runtime/safetensors.ts';

const FIXTURE = fileURLToPath(
  new URL('./fixtures/shared_b2_t24.weights.safetensors', import.meta.url),
);

/** A file from a header (object or raw JSON text) and a data section of `dataLen` bytes. */
function file(header: unknown, dataLen = 0, rawHeader?: string): Uint8Array {
  const h = new TextEncoder().encode(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

function parseError(bytes: Uint8Array, name = 'bad.safetensors'): KilnError {
  try {
    parseSafetensors(bytes, name);
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error('expected parseSafetensors to throw');
}

function expectBad(bytes: Uint8Array, fragments: string[], key?: string): void {
  const e = parseError(bytes);
  expect(e.code).toBe('KILN_E005');
  expect(e.message).toMatch(/^KILN_E005 bad checkpoint bad\.safetensors: /);
  expect(e.message).not.toContain('\n');
  if (key !== undefined) expect(e.message).toContain(`"${key}"`);
  for (const f of fragments) expect(e.message).toContain(f);
}

const f32 = (shape: number[], begin: number) => ({
  dtype: 'F32',
  shape,
  data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)],
});

describe('safetensors round trip', () => {
  it('writes and reads back several dtypes, a 0-d scalar and an empty tensor', async () => {
    const tensors = new Map<string, StTensorInput>([
      ['b', { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 255]) }],
      ['w', { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, -2, 3.5, 0, 1e-8, -0]) }],
      ['10', { dtype: 'I64', shape: [2], data: new BigInt64Array([-5n, 1n << 40n]) }],
      ['scalar', { dtype: 'F64', shape: [], data: new Float64Array([Math.PI]) }],
      ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
      ['i', { dtype: 'I32', shape: [1, 2], data: new Int32Array([-7, 2 ** 31 - 1]) }],
      ['mask', { dtype: 'BOOL', shape: [2], data: new Uint8Array([0, 1]) }],
      ['h', { dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) }],
    ]);
    const meta = { format: 'pt', note: 'round trip' };
    const dir = await mkdtemp(join(tmpdir(), 'kiln-st-'));
    try {
      const path = join(dir, 'rt.safetensors');
      await writeSafetensors(path, tensors, meta);
      const back = await readSafetensors(path);
      expect(back.metadata).toEqual(meta);
      expect([...back.tensors.keys()].sort()).toEqual([...tensors.keys()].sort());
      for (const [k, t] of tensors) {
        const r = back.tensors.get(k)!;
        expect(r.dtype).toBe(t.dtype);
        expect(r.shape).toEqual(t.shape);
        expect(r.data.constructor).toBe(t.data.constructor);
        expect(Array.from(r.data as ArrayLike<number | bigint>)).toEqual(
          Array.from(t.data as unknown as ArrayLike<number | bigint>),
        );
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('pads the header so data is 8-byte aligned and keeps insertion order in the header', () => {
    const bytes = serializeSafetensors(
      new Map<string, StTensorInput>([
        ['z', { dtype: 'F32', shape: [1], data: new Float32Array([1]) }],
        ['a', { dtype: 'F32', shape: [2], data: new Float32Array([2, 3]) }],
        ['3', { dtype: 'F32', shape: [], data: new Float32Array([4]) }],
      ]),
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text.indexOf('"z"')).toBeLessThan(text.indexOf('"a"'));
    expect(text.indexOf('"a"')).toBeLessThan(text.indexOf('"3"'));
    const parsed = JSON.parse(text);
    expect(parsed.z.data_offsets).toEqual([0, 4]);
    expect(parsed.a.data_offsets).toEqual([4, 12]);
    expect(parsed['3'].data_offsets).toEqual([12, 16]);
  });

  it('lays out mixed item sizes so every tensor is aligned', () => {
    const bytes = serializeSafetensors({
      u: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      f: { dtype: 'F32', shape: [1], data: new Float32Array([5]) },
    });
    const back = parseSafetensors(bytes, 'mixed.safetensors');
    expect(Array.from(back.tensors.get('u')!.data as Uint8Array)).toEqual([1, 2, 3]);
    expect(Array.from(back.tensors.get('f')!.data as Float32Array)).toEqual([5]);
  });

  it('rejects writer input whose byte size does not match the shape', () => {
    expect(() =>
      serializeSafetensors({ x: { dtype: 'F32', shape: [2], data: new Float32Array(3) } }),
    ).toThrow(/KILN_E011 .*"x" has 12 bytes but shape \[2\] of F32 needs 8/);
  });
});

describe('safetensors fixture', () => {
  it('reads the nanoGPT weights fixture', async () => {
    const f = await readSafetensors(FIXTURE);
    const wte = f.tensors.get('transformer.wte.weight')!;
    expect(wte.dtype).toBe('F32');
    expect(wte.shape).toEqual([96, 32]);
    expect(wte.data).toBeInstanceOf(Float32Array);
    expect(wte.data.length).toBe(96 * 32);
    expect(JSON.parse(f.metadata.config).n_layer).toBe(2);
    const k = toKilnTensor(wte, FIXTURE, 'transformer.wte.weight');
    expect(k.dtype).toBe('f32');
    expect(k.data).toEqual(wte.data);
  });
});

describe('toKilnTensor', () => {
  it('converts floats, ints and bools to kiln host dtypes', () => {
    const h = toKilnTensor({ dtype: 'F16', shape: [4], data: new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7c00]) }, 'm', 'h');
    expect(Array.from(h.data)).toEqual([1, -2, 2 ** -24, Infinity]);
    const bf = toKilnTensor({ dtype: 'BF16', shape: [2], data: new Uint16Array([0x3f80, 0xc040]) }, 'm', 'bf');
    expect(Array.from(bf.data)).toEqual([1, -3]);
    const d = toKilnTensor({ dtype: 'F64', shape: [], data: new Float64Array([0.5]) }, 'm', 'd');
    expect(d).toEqual({ dtype: 'f32', shape: [], data: new Float32Array([0.5]) });
    const i = toKilnTensor({ dtype: 'I64', shape: [2], data: new BigInt64Array([-3n, 7n]) }, 'm', 'i');
    expect(i).toEqual({ dtype: 'i32', shape: [2], data: new Int32Array([-3, 7]) });
    const u = toKilnTensor({ dtype: 'U8', shape: [1], data: new Uint8Array([200]) }, 'm', 'u');
    expect(u).toEqual({ dtype: 'i32', shape: [1], data: new Int32Array([200]) });
    const b = toKilnTensor({ dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) }, 'm', 'b');
    expect(b).toEqual({ dtype: 'bool', shape: [2], data: new Uint8Array([1, 0]) });
  });

  it('rejects an I64 value that does not fit in i32', () => {
    const t = { dtype: 'I64' as const, shape: [2], data: new BigInt64Array([1n, 1n << 40n]) };
    expect(() => toKilnTensor(t, 'model.safetensors', 'idx')).toThrow(
      /^KILN_E005 bad checkpoint model\.safetensors: tensor "idx" of I64 holds 1099511627776 at flat index 1/,
    );
  });
});

describe('safetensors strictness (KILN_E005)', () => {
  it('file shorter than 8 bytes', () => {
    expectBad(new Uint8Array(5), ['5 bytes', 'shorter than']);
  });

  it('header length beyond the file', () => {
    const b = file({});
    new DataView(b.buffer).setBigUint64(0, 1000n, true);
    expectBad(b, ['header length 1000', 'past the end']);
  });

  it('header length above 100 MB', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 200_000_000n, true);
    expectBad(b, ['exceeds', 'limit']);
  });

  it('header not valid JSON', () => {
    expectBad(file(null, 0, '{"a": '), ['not valid UTF-8 JSON']);
  });

  it('header not valid UTF-8', () => {
    const b = file(null, 0, '{"a":1}');
    b[9] = 0xff;
    expectBad(b, ['not valid UTF-8 JSON']);
  });

  it('header not an object', () => {
    expectBad(file([1, 2]), ['not a JSON object']);
  });

  it('__metadata__ not a string map', () => {
    expectBad(file({ __metadata__: { n_layer: 2 } }), ['"__metadata__" entry "n_layer" is not a string']);
    expectBad(file({ __metadata__: 'x' }), ['"__metadata__" is not a string-to-string map']);
  });

  it('tensor entry not an object', () => {
    expectBad(file({ w: 3 }), ['entry is not an object'], 'w');
  });

  it('unknown dtype', () => {
    expectBad(file({ w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1), ['unknown dtype "F8_E4M3"'], 'w');
  });

  it('shape not an array of non-negative integers', () => {
    expectBad(file({ w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 0] } }), ['shape [2,-1]'], 'w');
    expectBad(file({ w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 0] } }), ['not an array of non-negative integers'], 'w');
    expectBad(file({ w: { dtype: 'F32', shape: 4, data_offsets: [0, 16] } }, 16), ['has shape 4'], 'w');
  });

  it('data_offsets not two integers with begin <= end', () => {
    expectBad(file({ w: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), ['data_offsets [4,0]'], 'w');
    expectBad(file({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), ['data_offsets [0]'], 'w');
    expectBad(file({ w: { dtype: 'F32', shape: [1], data_offsets: ['0', '4'] } }, 4), ['not two integers'], 'w');
  });

  it('range beyond the data section', () => {
    expectBad(file({ w: f32([4], 0) }, 8), ['data_offsets [0,16] beyond the 8-byte data section'], 'w');
  });

  it('byte size does not match the shape', () => {
    const h = { 'transformer.wte.weight': { dtype: 'F32', shape: [96, 32], data_offsets: [0, 1024] } };
    const e = parseError(file(h, 1024), 'model.safetensors');
    expect(e.code).toBe('KILN_E005');
    expect(e.message).toBe(
      'KILN_E005 bad checkpoint model.safetensors: tensor "transformer.wte.weight" has 1024 bytes but shape [96,32] of F32 needs 12288; re-export the checkpoint',
    );
  });

  it('misaligned tensor', () => {
    const h = { u: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, w: { dtype: 'F32', shape: [1], data_offsets: [2, 6] } };
    expectBad(file(h, 6), ['misaligned', 'begin offset 2'], 'w');
  });

  it('overlapping ranges', () => {
    expectBad(file({ a: f32([2], 0), b: f32([1], 4) }, 8), ['overlap', '"a"'], 'b');
  });

  it('hole between tensors', () => {
    expectBad(file({ a: f32([1], 0), b: f32([1], 8) }, 12), ['[4,8)', 'belong to no tensor'], 'b');
  });

  it('trailing bytes not covered by any tensor', () => {
    expectBad(file({ a: f32([1], 0) }, 8), ['[4,8) at the end', 'belong to no tensor']);
  });

  it('BOOL byte other than 0 or 1 when converting', () => {
    const f = parseSafetensors(file({ m: { dtype: 'BOOL', shape: [2], data_offsets: [0, 2] } }, 2), 'm.safetensors');
    (f.tensors.get('m')!.data as Uint8Array)[1] = 7;
    expect(() => toKilnTensor(f.tensors.get('m')!, 'm.safetensors', 'm')).toThrow(
      /^KILN_E005 bad checkpoint m\.safetensors: tensor "m" of BOOL holds byte 7/,
    );
  });

  it('missing file names the path', async () => {
    await expect(readSafetensors('/nonexistent/x.safetensors')).rejects.toThrow(
      /^KILN_E005 bad checkpoint \/nonexistent\/x\.safetensors: cannot read the file/,
    );
  });
});
