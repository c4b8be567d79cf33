// Shared test helpers: the PyTorch fixtures, and the error measure the fixtures' README defines.

import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { KilnError } from '../ir/errors.ts';
import { f16Bits, roundF16 } from '../ir/f16.ts';
import type { HostData, HostTensor } from '../ir/host.ts';
import { type Shape, numel } from '../ir/types.ts';

export const FIXTURE_DIR = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const FIXTURE_WEIGHTS = FIXTURE_DIR + 'shared_b2_t24.weights.safetensors';
export const FIXTURE_EXPECTED = FIXTURE_DIR + 'shared_b2_t24.expected.safetensors';

export async function loadFixture(): Promise<{ weights: Map<string, HostTensor>; config: Record<string, unknown>; expected: Map<string, HostTensor> }> {
  const w = await readCheckpoint(FIXTURE_WEIGHTS);
  const e = await readCheckpoint(FIXTURE_EXPECTED);
  return { weights: w.tensors, config: w.config, expected: e.tensors };
}

/** Max abs error over max abs reference value: the fixtures' "relative" measure. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let maxErr = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    maxErr = Number.isNaN(err) ? Infinity : Math.max(maxErr, err);
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
  }
  return maxErr / (maxRef || 1);
}

export function asNumbers(d: HostData): Float64Array {
  return Float64Array.from(d as ArrayLike<number>);
}

/** mulberry32: deterministic data from a fast-check seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The three nanoGPT attention variants the fixtures are checked with, by label. */
export const ATTENTION_VARIANTS: readonly [string, { flash: boolean; sdpa_mask?: boolean }][] = [
  ['manual attention (flash false)', { flash: false }],
  ['sdpa isCausal (flash true)', { flash: true }],
  ['sdpa with an explicit mask (sdpa_mask)', { flash: true, sdpa_mask: true }],
];

/** A nanoGPT with the fixture's config and weights, in eval mode. */
export async function fixtureModel(override: object): Promise<import('../examples/nanogpt/model.ts').GPT> {
  const { default: createModel } = await import('../examples/nanogpt/model.ts');
  const fx = await loadFixture();
  const model = createModel({ ...(fx.config as object), ...override }).eval();
  model.loadStateDict(fx.weights, 'fixture');
  return model;
}

/** d loss / d data[i] for every i by central differences, moving each value by ±h in place and back. */
export function centralDifferences(data: { [i: number]: number; length: number }, loss: () => number, h: number): Float64Array {
  const numeric = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    data[i] = x + h;
    const up = loss();
    data[i] = x - h;
    const down = loss();
    data[i] = x;
    numeric[i] = (up - down) / (2 * h);
  }
  return numeric;
}

/** The KilnError a call throws (synchronously), or a failed test. */
export function thrown(fn: () => unknown): KilnError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error('expected a KilnError');
}

/** The spacing of f16 values at f16 value v (2^-24 in the subnormals). */
export function ulp16(v: number): number {
  const exponent = (f16Bits(v) >>> 10) & 0x1f;
  return 2 ** (Math.max(exponent, 1) - 25);
}

/** A seeded f16 tensor: uniform values in [lo, hi) rounded to f16, held as f32. */
export function randomF16(shape: Shape, seed: number, lo = -2, hi = 2): HostTensor {
  const r = rng(seed);
  return { type: { dtype: 'f16', shape: [...shape] }, data: Float32Array.from({ length: numel(shape) }, () => roundF16(lo + r() * (hi - lo))) };
}
