// Checkpoints in f16 (issue 16): F16 and BF16 tensors read as f16 for a model that runs in f16, f16
// tensors written as F16, F32 <-> f16 conversion in loadStateDict, training checkpoints F32 always.
// Every rounding is checked against a brute-force reference that knows nothing of ir/f16.ts: the nearest
// of all f16 values by search, ties to the even bit pattern.

import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdamW, KilnError, autocast, gradsOf, manualSeed, noGrad } from '../index.ts';
import { thrown } from './helpers.ts';
import { loadCheckpointBytes, readCheckpoint, saveCheckpointBytes } from '../compiler/checkpoint.ts';
import { charsOf, checkpointBytes, inferenceCheckpointBytes, readTrainingCheckpoint } from '../examples/nanogpt/checkpoint.ts';
import { charDataset } from '../examples/nanogpt/data.ts';
import createModel, { type GPT, type GPTConfig } from '../examples/nanogpt/model.ts';
import { fromKilnTensor, parseSafetensors, serializeSafetensors, toKilnTensor, type StDType } from '../runtime/safetensors.ts';

// ---- the reference ----

/** Every finite non-negative f16 by bit pattern 0x0000..0x7bff, from its fields by powers of two; then 2^16 at 0x7c00, where rounding as if the exponent had no bound lands, which is infinity. */
const F16_LADDER = Array.from({ length: 0x7c01 }, (_, h) => {
  const e = h >> 10;
  const m = h & 0x3ff;
  return e === 0 ? m * 2 ** -24 : (1024 + m) * 2 ** (e - 25);
});

/** The f16 bit pattern nearest to x: binary search of the ladder, a tie to the even pattern; NaN as 0x7e00. */
function nearestF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0; // F16_LADDER[lo] <= a < F16_LADDER[hi], or lo = 0x7c00 past the end
  let hi = F16_LADDER.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (F16_LADDER[mid] <= a) lo = mid;
    else hi = mid;
  }
  if (lo === 0x7c00) return sign | 0x7c00;
  const below = a - F16_LADDER[lo];
  const above = F16_LADDER[lo + 1] - a;
  return sign | (below < above || (below === above && lo % 2 === 0) ? lo : lo + 1);
}

/** The value of an f16 pattern, from the ladder. */
function f16Of(h: number): number {
  const a = (h & 0x7fff) === 0x7c00 ? Infinity : (h & 0x7fff) > 0x7c00 ? NaN : F16_LADDER[h & 0x7fff];
  return h & 0x8000 ? -a : a;
}

/** The value of a bf16 pattern, from its fields (8 exponent bits, 7 mantissa bits). */
function bf16Of(b: number): number {
  const e = (b >> 7) & 0xff;
  const m = b & 0x7f;
  const a = e === 0xff ? (m ? NaN : Infinity) : e === 0 ? m * 2 ** -133 : (128 + m) * 2 ** (e - 134);
  return b & 0x8000 ? -a : a;
}

const isOverflow = (x: number, h: number) => Number.isFinite(x) && (h & 0x7fff) === 0x7c00;

/** Every f16 midpoint (halfway between neighbours, both signs), and the f32 values one ulp each side of it: where rounding can go wrong. */
function tieNeighbourhood(): Float32Array {
  const out: number[] = [];
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let h = 0; h < 0x7bff; h++) {
    f[0] = (F16_LADDER[h] + F16_LADDER[h + 1]) / 2; // exact in f32: one bit more than f16
    out.push(f[0]);
    u[0] += 1;
    out.push(f[0]);
    u[0] -= 2;
    out.push(f[0]);
  }
  return Float32Array.from([...out, ...out.map((x) => -x)]);
}

/** Same values bit for bit: -0 is not 0, NaN is NaN. */
function expectSameValues(actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  expect(actual.length).toBe(expected.length);
  const bad = Array.from(expected).findIndex((x, i) => !Object.is(x, actual[i]));
  expect(bad < 0 ? 'all equal' : `index ${bad}: ${actual[bad]} vs ${expected[bad]}`).toBe('all equal');
}

const ALL_PATTERNS = Uint16Array.from({ length: 0x10000 }, (_, i) => i);
const st = (dtype: StDType, data: Uint16Array | Float32Array | Float64Array) => ({ dtype, shape: [data.length], data });

// ---- reading ----

describe('reading F16', () => {
  it('upcasts every F16 pattern to f32 exactly by default, as before', () => {
    const k = toKilnTensor(st('F16', ALL_PATTERNS), 'h.safetensors', 'h');
    expect(k.dtype).toBe('f32');
    expectSameValues(k.data, Array.from(ALL_PATTERNS, f16Of));
  });

  it('reads every F16 pattern as f16 with the same values under floats "f16" and "as-stored"', () => {
    for (const floats of ['f16', 'as-stored'] as const) {
      const k = toKilnTensor(st('F16', ALL_PATTERNS), 'h.safetensors', 'h', { floats });
      expect(k.dtype).toBe('f16');
      expectSameValues(k.data, Array.from(ALL_PATTERNS, f16Of));
    }
  });

  it('round-trips f16 -> F16 file -> f16 bit for bit (every pattern but NaN payloads, which come back as one quiet NaN)', () => {
    const notNaN = ALL_PATTERNS.filter((h) => !Number.isNaN(f16Of(h)));
    const values = Float32Array.from(notNaN, f16Of);
    const written = fromKilnTensor({ dtype: 'f16', shape: [values.length], data: values }, 'h');
    expect(written.dtype).toBe('F16');
    expect(Array.from(written.data as Uint16Array)).toEqual(Array.from(notNaN));
    const back = toKilnTensor(parseSafetensors(serializeSafetensors({ h: written }), 'rt').tensors.get('h')!, 'rt', 'h', { floats: 'f16' });
    expectSameValues(back.data, values);
    const nan = fromKilnTensor({ dtype: 'f16', shape: [2], data: Float32Array.of(NaN, -NaN) }, 'n');
    expect(Array.from(nan.data as Uint16Array).map((h) => Number.isNaN(f16Of(h)))).toEqual([true, true]);
  });
});

describe('reading BF16 as f16', () => {
  it('rounds every finite-in-f16 BF16 pattern as the brute-force reference does (subnormals, ties, NaN, inf, -0)', () => {
    const fits = ALL_PATTERNS.filter((b) => !isOverflow(bf16Of(b), nearestF16(bf16Of(b))));
    const k = toKilnTensor(st('BF16', fits), 'b.safetensors', 'b', { floats: 'f16' });
    expect(k.dtype).toBe('f16');
    expectSameValues(k.data, Array.from(fits, (b) => f16Of(nearestF16(bf16Of(b)))));
    // The cases this covers, spelled out: bf16 keeps 8 significant bits, f16 11, so normal values are exact
    // and ties happen only among f16's subnormals.
    const one = (b: number) => toKilnTensor(st('BF16', Uint16Array.of(b)), 'b', 'b', { floats: 'f16' }).data[0];
    expect(one(0x3f80)).toBe(1);
    expect(one(0x477f)).toBe(65280); // the largest bf16 below 65504
    expect(one(0x3380)).toBe(2 ** -24); // f16's smallest subnormal, exactly
    expect(one(0x3300)).toBe(0); // 2^-25: a tie between 0 and 2^-24, to the even 0
    expect(one(0x33c0)).toBe(2 ** -23); // 1.5 * 2^-24: a tie between 2^-24 and 2^-23, to the even 2^-23
    expect(Object.is(one(0x8001), -0)).toBe(true); // a bf16 subnormal, far below f16's: -0
    expect(one(0xff80)).toBe(-Infinity); // inf stays inf: no overflow, it was never finite
    expect(one(0x7fc0)).toBeNaN();
  });

  it('also reads BF16 as f32 exactly, by default and under "as-stored" (kiln has no bf16 dtype)', () => {
    for (const floats of ['f32', 'as-stored'] as const) {
      const k = toKilnTensor(st('BF16', ALL_PATTERNS), 'b', 'b', { floats });
      expect(k.dtype).toBe('f32');
      expectSameValues(k.data, Array.from(ALL_PATTERNS, bf16Of));
    }
  });

  it('refuses every BF16 value beyond f16 with a one-line KILN_E006 naming the file, tensor, value and index', () => {
    // bf16 reaches 3.4e38; f16's rounding carries every finite value from 65520 up to infinity.
    const over = ALL_PATTERNS.filter((b) => isOverflow(bf16Of(b), nearestF16(bf16Of(b))));
    expect(over.length).toBe(2 * (0x7f80 - 0x4780)); // 65536 = 0x4780 up to the largest finite bf16, both signs
    for (const b of over) {
      expect(() => toKilnTensor(st('BF16', Uint16Array.of(0x3f80, b)), 'w.safetensors', 'w', { floats: 'f16' })).toThrow(KilnError);
    }
    const e = thrown(() => toKilnTensor(st('BF16', Uint16Array.of(0x3f80, 0x4780)), 'w.safetensors', 'transformer.wte.weight', { floats: 'f16' }));
    expect(e.message).toBe(
      'KILN_E006 w.safetensors: tensor "transformer.wte.weight" of BF16 holds 65536 at flat index 1, beyond f16\'s range (largest finite 65504), so it would become inf; load it into a model that runs in f32',
    );
  });
});

describe('reading F32 and F64 as f16', () => {
  it('rounds F32 at and next to every f16 tie as the reference does', () => {
    const xs = tieNeighbourhood();
    const k = toKilnTensor(st('F32', xs), 'f', 'f', { floats: 'f16' });
    expect(k.dtype).toBe('f16');
    expectSameValues(k.data, Array.from(xs, (x) => f16Of(nearestF16(x))));
  });

  it('rounds F64 once: a double just past a tie goes up, where rounding to f32 first would make it the tie and round it to even', () => {
    const x = 1 + 2 ** -11 + 2 ** -40;
    expect(Math.fround(x)).toBe(1 + 2 ** -11); // the trap
    const ties = tieNeighbourhood().filter((_, i) => i % 3 === 0); // the midpoints themselves
    const xs = Float64Array.from([x, -x, ...Array.from(ties, (m) => m * (1 + 2 ** -30)), ...Array.from(ties, (m) => m * (1 - 2 ** -30))]);
    const k = toKilnTensor(st('F64', xs), 'd', 'd', { floats: 'f16' });
    expect(k.data[0]).toBe(1 + 2 ** -10);
    expectSameValues(k.data, Array.from(xs, (v) => f16Of(nearestF16(v))));
  });

  it('keeps values up to 65520 (exclusive) finite and refuses 65520 and beyond', () => {
    const k = toKilnTensor(st('F32', Float32Array.of(65504, 65519.99, -65519.99, Infinity)), 'f', 'f', { floats: 'f16' });
    expect(Array.from(k.data)).toEqual([65504, 65504, -65504, Infinity]);
    expect(thrown(() => toKilnTensor(st('F32', Float32Array.of(1, -65520)), 'f.safetensors', 'w', { floats: 'f16' })).message).toMatch(
      /^KILN_E006 f\.safetensors: tensor "w" of F32 holds -65520 at flat index 1, beyond f16's range/,
    );
  });

  it('reads F32 and F64 as f32 under "as-stored"', () => {
    expect(toKilnTensor(st('F32', Float32Array.of(0.1)), 'f', 'f', { floats: 'as-stored' })).toEqual({ dtype: 'f32', shape: [1], data: Float32Array.of(0.1) });
    expect(toKilnTensor(st('F64', Float64Array.of(0.1)), 'f', 'f', { floats: 'as-stored' })).toEqual({ dtype: 'f32', shape: [1], data: Float32Array.of(0.1) });
  });
});

// ---- writing ----

describe('writing F16', () => {
  it('writes an f32 tensor as F16 when asked, rounding as the reference does', () => {
    const xs = tieNeighbourhood();
    const w = fromKilnTensor({ dtype: 'f32', shape: [xs.length], data: xs }, 'w', 'f16');
    expect(w.dtype).toBe('F16');
    expect(Array.from(w.data as Uint16Array)).toEqual(Array.from(xs, nearestF16));
  });

  it('writes an f16 tensor as F32 exactly when asked', () => {
    const values = Float32Array.from(ALL_PATTERNS.filter((h) => (h & 0x7fff) <= 0x7c00), f16Of);
    const w = fromKilnTensor({ dtype: 'f16', shape: [values.length], data: values }, 'w', 'f32');
    expect(w.dtype).toBe('F32');
    expectSameValues(w.data as Float32Array, values);
  });

  it('refuses to write a finite value beyond f16 as F16, with a one-line KILN_E011', () => {
    const e = thrown(() => fromKilnTensor({ dtype: 'f32', shape: [2], data: Float32Array.of(0, 1e5) }, 'lm.weight', 'f16'));
    expect(e.message).toBe(
      'KILN_E011 saving as F16: tensor "lm.weight" holds 100000 at flat index 1, beyond f16\'s range (largest finite 65504), so it would become inf; save it as F32',
    );
  });

  it('lays out F32 and F16 tensors aligned, with right data_offsets, little-endian 2-byte patterns and an 8-byte-aligned header', () => {
    const bytes = serializeSafetensors({
      h: fromKilnTensor({ dtype: 'f16', shape: [3], data: Float32Array.of(1, -2, 65504) }, 'h'),
      w: fromKilnTensor({ dtype: 'f32', shape: [1], data: Float32Array.of(0.5) }, 'w'),
    });
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.w).toEqual({ dtype: 'F32', shape: [1], data_offsets: [0, 4] });
    expect(header.h).toEqual({ dtype: 'F16', shape: [3], data_offsets: [4, 10] });
    expect(Array.from(bytes.subarray(8 + n + 4))).toEqual([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b]); // 0x3c00, 0xc000, 0x7bff, low byte first
  });
});

// ---- a file PyTorch would write ----

describe('an F16 file as torch and the safetensors package write it', () => {
  // No PyTorch-written F16 file exists in ../shared/fixtures (only the F32 nanoGPT fixtures), and torch is
  // not installed here, so the bytes are built by hand: the header as the safetensors package writes it
  // for torch.tensor([...], dtype=torch.float16) (a "pt" format note, a space-padded JSON header), then the
  // little-endian bit patterns of those values, which are known: 0.1 -> 0x2e66, 1/3 -> 0x3555.
  const patterns = [0x3c00, 0xc000, 0x2e66, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x3555];
  const values = [1, -2, 0.0999755859375, 65504, 2 ** -24, -0, Infinity, 0.333251953125];
  function torchFile(): Uint8Array {
    let header = '{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,4],"data_offsets":[0,16]}}';
    while ((8 + header.length) % 8 !== 0) header += ' ';
    const out = new Uint8Array(8 + header.length + 16);
    out[0] = header.length; // u64 little-endian, < 256
    out.set(new TextEncoder().encode(header), 8);
    patterns.forEach((h, i) => out.set([h & 0xff, h >> 8], 8 + header.length + 2 * i));
    return out;
  }

  it('reads it as f16 with the known values, and as f32 with the same values', () => {
    const file = parseSafetensors(torchFile(), 'torch.safetensors');
    expect(file.metadata).toEqual({ format: 'pt' });
    const h = toKilnTensor(file.tensors.get('w')!, 'torch.safetensors', 'w', { floats: 'f16' });
    expect(h.dtype).toBe('f16');
    expect(h.shape).toEqual([2, 4]);
    expectSameValues(h.data, values);
    expectSameValues(toKilnTensor(file.tensors.get('w')!, 'torch.safetensors', 'w').data, values);
  });

  it('writes those values back to the same data bytes', () => {
    const bytes = serializeSafetensors({ w: fromKilnTensor({ dtype: 'f16', shape: [2, 4], data: Float32Array.from(values) }, 'w') }, { format: 'pt' });
    expect(Array.from(bytes.subarray(bytes.length - 16))).toEqual(Array.from(torchFile().subarray(torchFile().length - 16)));
  });
});

// ---- nanoGPT ----

const TINY: Partial<GPTConfig> = { block_size: 16, vocab_size: 24, n_layer: 2, n_head: 2, n_embd: 16, bias: true, flash: false };

function tinyModel(seed: number): GPT {
  manualSeed(seed);
  return createModel(TINY);
}

/** Every state-dict tensor's dtype and f32 bit patterns (bit for bit: -0 and NaN payloads count). */
function bitsOf(model: GPT): Map<string, { dtype: string; bits: number[] }> {
  return new Map([...model.stateDict()].map(([k, t]) => [k, { dtype: t.type.dtype, bits: Array.from(new Uint32Array(Float32Array.from(t.data).buffer)) }]));
}

function headerOf(bytes: Uint8Array): Record<string, { dtype: string }> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
}

const tensorDTypes = (bytes: Uint8Array) => new Set(Object.entries(headerOf(bytes)).filter(([k]) => k !== '__metadata__').map(([, v]) => v.dtype));

describe('a nanoGPT checkpoint in F16', () => {
  it('saves a model.half() in F16 (the mask buffers too), about half the size, and loads into another model.half() bit for bit', () => {
    const source = tinyModel(1).half();
    const bytes = saveCheckpointBytes(source, TINY);
    expect(tensorDTypes(bytes)).toEqual(new Set(['F16']));
    expect(bytes.length).toBeLessThan(0.55 * saveCheckpointBytes(tinyModel(1), TINY).length);
    const target = tinyModel(2).half();
    expect(bitsOf(target)).not.toEqual(bitsOf(source));
    expect(loadCheckpointBytes(target, bytes, 'half.safetensors', { floats: 'f16' })).toEqual(TINY);
    expect(bitsOf(target)).toEqual(bitsOf(source));
    // Read as f32 (the default) and converted by loadStateDict, the same bits.
    const viaF32 = tinyModel(3).half();
    loadCheckpointBytes(viaF32, bytes, 'half.safetensors');
    expect(bitsOf(viaF32)).toEqual(bitsOf(source));
  });

  it('loads F16 weights into an f32 model as the exact f32 of each f16', () => {
    const source = tinyModel(1).half();
    const target = tinyModel(2);
    loadCheckpointBytes(target, saveCheckpointBytes(source), 'half.safetensors');
    const f32 = bitsOf(target);
    for (const [key, t] of bitsOf(source)) expect(f32.get(key)).toEqual({ dtype: 'f32', bits: t.bits });
  });

  it('saves an f32 model in F16 when asked, and that loads into model.half() as the same model halved', () => {
    const bytes = saveCheckpointBytes(tinyModel(1), TINY, { floats: 'f16' });
    expect(tensorDTypes(bytes)).toEqual(new Set(['F16']));
    const target = tinyModel(2).half();
    loadCheckpointBytes(target, bytes, 'half.safetensors');
    expect(bitsOf(target)).toEqual(bitsOf(tinyModel(1).half()));
  });

  it('loads an F32 checkpoint into model.half() rounded once per weight, and refuses one beyond f16 (KILN_E006), loading nothing', () => {
    const target = tinyModel(2).half();
    loadCheckpointBytes(target, saveCheckpointBytes(tinyModel(1)), 'f32.safetensors');
    expect(bitsOf(target)).toEqual(bitsOf(tinyModel(1).half()));

    const big = tinyModel(1);
    big.transformer.ln_f.bias!.host!.data[3] = 7e4;
    const fresh = tinyModel(2).half();
    const before = bitsOf(fresh);
    const e = thrown(() => loadCheckpointBytes(fresh, saveCheckpointBytes(big), 'big.safetensors'));
    expect(e.message).toBe(
      'KILN_E006 big.safetensors: key "transformer.ln_f.bias" holds 70000 at flat index 3, beyond f16\'s range (largest finite 65504), so loaded into the model\'s f16[16] it would be inf',
    );
    expect(bitsOf(fresh)).toEqual(before);
    // Read as f16 instead, the file is refused at reading, naming the same tensor.
    expect(() => loadCheckpointBytes(fresh, saveCheckpointBytes(big), 'big.safetensors', { floats: 'f16' })).toThrow(/KILN_E006 big\.safetensors: tensor "transformer\.ln_f\.bias" of F32 holds 70000/);
  });

  it('loads a BF16 checkpoint into model.half() with each weight rounded once from bf16, as the reference does', () => {
    const source = tinyModel(1);
    const tensors = new Map<string, { dtype: StDType; shape: number[]; data: Uint16Array }>();
    const bf16 = new Map<string, number[]>();
    for (const [key, t] of source.stateDict()) {
      const bits = Uint16Array.from(new Uint32Array(Float32Array.from(t.data).buffer), (u) => u >>> 16); // truncated to bf16: any bf16 will do
      tensors.set(key, { dtype: 'BF16', shape: [...t.type.shape], data: bits });
      bf16.set(key, Array.from(bits, bf16Of));
    }
    const target = tinyModel(2).half();
    loadCheckpointBytes(target, serializeSafetensors(tensors), 'bf16.safetensors', { floats: 'f16' });
    for (const [key, t] of target.stateDict()) {
      expect(t.type.dtype).toBe('f16');
      expectSameValues(t.data, bf16.get(key)!.map((x) => f16Of(nearestF16(x))));
    }
  });

  it('reads a checkpoint file as f16 with readCheckpoint(path, { floats: "f16" })', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-f16-'));
    try {
      const path = join(dir, 'w.safetensors');
      const source = tinyModel(1).half();
      await writeFile(path, saveCheckpointBytes(source, TINY));
      const ckpt = await readCheckpoint(path, { floats: 'f16' });
      expect(ckpt.config).toEqual(TINY);
      expect(new Set([...ckpt.tensors.values()].map((t) => t.type.dtype))).toEqual(new Set(['f16']));
      const target = tinyModel(2).half();
      target.loadStateDict(ckpt.tensors, path);
      expect(bitsOf(target)).toEqual(bitsOf(source));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('nanoGPT training checkpoints keep F32 master weights', () => {
  const data = charDataset('to be or not to be, that is the question: whether tis nobler in the mind');

  it('writes every weight and moment as F32 even when the model holds f16 weights, with the f16 values exactly', () => {
    const model = createModel({ ...TINY, vocab_size: data.vocabSize });
    const optimizer = new AdamW(model);
    model.half(); // e.g. halved to sample mid-run; the checkpoint is what training resumes from
    const bytes = checkpointBytes(model, optimizer, data, 10, 2.5);
    expect(tensorDTypes(bytes)).toEqual(new Set(['F32']));
    const file = parseSafetensors(bytes, 'ckpt');
    for (const [key, t] of model.stateDict()) expectSameValues(file.tensors.get(key)!.data as Float32Array, t.data);
  });

  it('writes the f32 master weights as F32, unrounded, after a training step under autocast', async () => {
    manualSeed(5);
    const model = createModel({ ...TINY, vocab_size: data.vocabSize, dropout: 0 });
    const optimizer = new AdamW(model, { lr: 1e-2 });
    const { x, y } = data.getBatch('train', 2, 8);
    const f32Loss = await noGrad(() => model.forward(x, y).loss!).data();
    const { loss } = autocast('f16', () => model.forward(x, y));
    expect(await loss!.data()).not.toEqual(f32Loss); // the matmuls did run in f16
    loss!.backward();
    optimizer.step(await gradsOf(model));
    expect(new Set(model.parameters().map((p) => p.dtype))).toEqual(new Set(['f32']));
    const bytes = checkpointBytes(model, optimizer, data, 1, 3);
    expect(tensorDTypes(bytes)).toEqual(new Set(['F32']));
    const file = parseSafetensors(bytes, 'ckpt');
    const weights = model.stateDict();
    for (const [key, t] of weights) expectSameValues(file.tensors.get(key)!.data as Float32Array, t.data);
    // Not f16 values: a checkpoint rounded to f16 anywhere on the way would fail this.
    const wte = file.tensors.get('transformer.wte.weight')!.data as Float32Array;
    expect(wte.filter((v) => v !== f16Of(nearestF16(v))).length).toBeGreaterThan(wte.length / 2);
  });

  it('saves an inference checkpoint in F16 that sample.ts reads, as f16 or f32', async () => {
    const model = createModel({ ...TINY, vocab_size: data.vocabSize });
    const bytes = inferenceCheckpointBytes(model, data, 'f16');
    expect(tensorDTypes(bytes)).toEqual(new Set(['F16']));
    const dir = await mkdtemp(join(tmpdir(), 'kiln-f16-'));
    try {
      const path = join(dir, 'ckpt.safetensors');
      await writeFile(path, bytes);
      const half = await readTrainingCheckpoint(path, { floats: 'f16' });
      expect(charsOf(half)).toEqual(data.chars);
      const target = createModel({ ...TINY, ...half.config }).half();
      target.loadStateDict(half.tensors, path);
      expect(bitsOf(target)).toEqual(bitsOf(model.half()));
      const f32 = await readTrainingCheckpoint(path);
      expect(new Set([...f32.tensors.values()].map((t) => t.type.dtype))).toEqual(new Set(['f32']));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
