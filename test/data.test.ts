import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { KilnError, manualSeed } from '../index.ts';
import { SHAKESPEARE_PATH, charDataset, loadShakespeareChar } from '../examples/nanogpt/data.ts';

const text = await readFile(SHAKESPEARE_PATH, 'utf-8');
const ds = await loadShakespeareChar();

describe('shakespeare_char data (nanoGPT prepare.py)', () => {
  it('has the 65 sorted unique characters of the text as its vocabulary', () => {
    expect(text.length).toBe(1_115_394);
    expect(ds.vocabSize).toBe(65);
    // prepare.py prints: "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    expect(ds.chars.join('')).toBe("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
  });

  it('encodes and decodes a string round trip, ids by sorted position', () => {
    expect(ds.encode('\n !a')).toEqual([0, 1, 2, 39]);
    const s = 'First Citizen:\nBefore we proceed any further, hear me speak.';
    expect(ds.decode(ds.encode(s))).toBe(s);
    expect(() => ds.encode('é')).toThrow(KilnError);
  });

  it('splits 90/10 at int(n * 0.9): 1,003,854 train and 111,540 val tokens, covering the text', () => {
    const cut = Math.floor(text.length * 0.9);
    expect(cut).toBe(1_003_854);
    expect(ds.train.length).toBe(1_003_854);
    expect(ds.val.length).toBe(111_540);
    expect(ds.decode(ds.train) + ds.decode(ds.val)).toBe(text);
  });

  it('getBatch returns i32 x and y of [B, T], y being x shifted by one within the split', async () => {
    const { x, y } = ds.getBatch('val', 4, 8);
    expect([x.dtype, y.dtype]).toEqual(['i32', 'i32']);
    expect(x.shape).toEqual([4, 8]);
    expect(y.shape).toEqual([4, 8]);
    const [xs, ys] = [await x.data(), await y.data()];
    for (let b = 0; b < 4; b++) {
      for (let t = 0; t < 7; t++) expect(ys[b * 8 + t]).toBe(xs[b * 8 + t + 1]);
    }
  });

  it('getBatch takes windows at floor(rng() * (len - T)), as torch.randint(len(data) - block_size)', async () => {
    const T = 16;
    const at = [0, 0.5, 0.999999999];
    let k = 0;
    const { x, y } = ds.getBatch('train', 3, T, () => at[k++]);
    const [xs, ys] = [await x.data(), await y.data()];
    at.forEach((u, b) => {
      const i = Math.floor(u * (ds.train.length - T));
      expect(Array.from(xs.subarray(b * T, (b + 1) * T))).toEqual(Array.from(ds.train.subarray(i, i + T)));
      expect(Array.from(ys.subarray(b * T, (b + 1) * T))).toEqual(Array.from(ds.train.subarray(i + 1, i + 1 + T)));
    });
    expect(Math.floor(at[2] * (ds.train.length - T)) + 1 + T).toBe(ds.train.length); // the last possible y ends at the split's end
  });

  it('getBatch is deterministic under manualSeed and differs between seeds', async () => {
    const batch = async (seed: number) => {
      manualSeed(seed);
      const { x, y } = ds.getBatch('train', 2, 32);
      return [Array.from(await x.data()), Array.from(await y.data())];
    };
    expect(await batch(1337)).toEqual(await batch(1337));
    expect(await batch(1337)).not.toEqual(await batch(42));
  });

  it('getBatch refuses a block size the split cannot hold', () => {
    const tiny = charDataset('abcdefghijklmnopqrst'); // 18 train, 2 val
    expect(() => tiny.getBatch('val', 1, 2)).toThrow(/KILN_E011.*val split has 2 tokens/);
    expect(tiny.getBatch('val', 1, 1).x.shape).toEqual([1, 1]);
  });
});
