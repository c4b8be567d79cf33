// Character-level tiny Shakespeare, as nanoGPT's data/shakespeare_char/prepare.py prepares it and
// train.py's get_batch samples it: vocabulary = the sorted unique characters, 90/10 train/val split.

import { KilnError, type Tensor, random, tensor } from '../../index.ts';

export type Split = 'train' | 'val';

export interface CharDataset {
  /** The sorted unique characters (code point order, as Python's sorted()); index = token id. */
  chars: string[];
  vocabSize: number;
  encode(s: string): number[];
  decode(ids: ArrayLike<number>): string;
  train: Int32Array;
  val: Int32Array;
  /**
   * batchSize random windows of blockSize tokens: x [B, T] and y [B, T] (x shifted by one), both i32.
   * Start offsets are floor(rng() * (len - blockSize)), as torch.randint(len(data) - block_size).
   */
  getBatch(split: Split, batchSize: number, blockSize: number, rng?: () => number): { x: Tensor; y: Tensor };
}

/** The dataset of a text, as prepare.py builds it. */
export function charDataset(text: string): CharDataset {
  const all = [...text]; // by code point, as Python iterates a str
  const chars = [...new Set(all)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const stoi = new Map(chars.map((c, i) => [c, i]));
  const encode = (s: string): number[] =>
    [...s].map((c) => {
      const id = stoi.get(c);
      if (id === undefined) throw new KilnError('KILN_E011', `character ${JSON.stringify(c)} is not in the vocabulary`);
      return id;
    });
  const decode = (ids: ArrayLike<number>): string => Array.from(ids, (i) => chars[i]).join('');

  const n = all.length;
  const cut = Math.floor(n * 0.9); // int(n*0.9)
  const ids = Int32Array.from(all, (c) => stoi.get(c)!);
  const train = ids.slice(0, cut);
  const val = ids.slice(cut);

  function getBatch(split: Split, batchSize: number, blockSize: number, rng: () => number = random): { x: Tensor; y: Tensor } {
    const data = split === 'train' ? train : val;
    if (data.length <= blockSize) throw new KilnError('KILN_E011', `getBatch: the ${split} split has ${data.length} tokens, too few for block size ${blockSize}`);
    const x = new Int32Array(batchSize * blockSize);
    const y = new Int32Array(batchSize * blockSize);
    for (let b = 0; b < batchSize; b++) {
      const i = Math.floor(rng() * (data.length - blockSize));
      x.set(data.subarray(i, i + blockSize), b * blockSize);
      y.set(data.subarray(i + 1, i + 1 + blockSize), b * blockSize);
    }
    return { x: tensor(x, [batchSize, blockSize], 'i32'), y: tensor(y, [batchSize, blockSize], 'i32') };
  }

  return { chars, vocabSize: chars.length, encode, decode, train, val, getBatch };
}

/** The tiny Shakespeare text shipped beside this file (data/tinyshakespeare.txt, 1,115,394 characters). */
export const SHAKESPEARE_PATH = new URL('./data/tinyshakespeare.txt', import.meta.url);

/** The shakespeare_char dataset: 65 characters, 1,003,854 training and 111,540 validation tokens. */
export async function loadShakespeareChar(path: string | URL = SHAKESPEARE_PATH): Promise<CharDataset> {
  const { readFile } = await import('node:fs/promises');
  return charDataset(await readFile(path, 'utf-8'));
}
