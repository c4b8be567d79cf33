// Proving a mask causal at compile time, by evaluating its content over the region attention uses,
// and finding the query rows it leaves with no key. PyTorch's kernel picker cannot afford this at run
// time; kiln does it once, when it compiles.

import type { HostTensor } from '../ir/host.ts';

/** How a mask's values mean "attend": fill (true = masked out), keep (true = attend), or additive. */
export type MaskKind = 'fill' | 'keep' | 'additive';

/** A masked-out additive value: -inf, or a finite stand-in for it (torch.finfo(float32).min and the like). */
const MASKED_ADDITIVE = -1e30;

/** Whether a mask value means "attend": null for an additive value that is neither 0 nor masked (a real score). */
function attendsBy(value: number, kind: MaskKind): boolean | null {
  if (kind === 'keep') return value !== 0;
  if (kind === 'fill') return value === 0;
  return value === 0 ? true : value <= MASKED_ADDITIVE ? false : null;
}

export type CausalVerdict = { causal: true; reason: string } | { causal: false; reason: string };

/**
 * Is `mask`, broadcast to scores [..., L, S], exactly PyTorch's is_causal mask: attend iff j <= i?
 * Reads each of the mask's own elements once (a [1,1,T,T] buffer costs T*T, not B*H*T*T).
 */
export function proveCausal(mask: HostTensor, l: number, s: number, kind: MaskKind, label: string): CausalVerdict {
  const shape = mask.type.shape;
  const rows = shape.length >= 2 ? shape[shape.length - 2] : 1;
  const cols = shape.length >= 1 ? shape[shape.length - 1] : 1;
  if ((rows !== l && l > 1) || (cols !== s && s > 1)) {
    return { causal: false, reason: `mask ${label} is [${shape.join(',')}]: it repeats one value along the query or key dim, so it is not causal` };
  }
  const data = mask.data;
  for (let idx = 0; idx < data.length; idx++) {
    const i = rows === 1 ? 0 : Math.floor(idx / cols) % rows;
    const j = cols === 1 ? 0 : idx % cols;
    const value = data[idx];
    const attends = attendsBy(value, kind);
    const where = shape.length > 2 && idx >= rows * cols ? ` of batch entry ${Math.floor(idx / (rows * cols))}` : '';
    if (attends === null) return { causal: false, reason: `mask ${label} is not causal: element [${i}, ${j}]${where} is ${value}, neither 0 nor -inf` };
    if (attends !== j <= i) {
      const key = j > i ? 'a later position' : j === i ? 'its own position' : 'an earlier position';
      return { causal: false, reason: `mask ${label} is not causal: element [${i}, ${j}]${where} is ${value}, so query ${i} ${attends ? 'attends to' : 'does not attend to'} key ${j} (${key})` };
    }
  }
  return { causal: true, reason: `mask ${label} proved lower-triangular over [${l},${s}]` };
}

/**
 * The first query row that `mask`, broadcast to scores [..., L, S], leaves with no key: every score
 * -inf, so softmax gives NaN there. A fill mask is read as filling with -inf; an additive value masks
 * only when it is -inf (a finite one, however low, is a score). Null when every row keeps a key.
 */
export function firstEmptyRow(mask: HostTensor, l: number, s: number, kind: MaskKind): { row: number; entry: number } | null {
  const shape = mask.type.shape;
  const rows = shape.length >= 2 ? shape[shape.length - 2] : 1;
  const cols = shape.length >= 1 ? shape[shape.length - 1] : 1;
  if (l === 0 || s === 0) return null;
  const masks = (value: number) => (kind === 'keep' ? value === 0 : kind === 'fill' ? value !== 0 : value === -Infinity);
  for (let base = 0; base < mask.data.length; base += rows * cols) {
    for (let i = 0; i < rows; i++) {
      let empty = true;
      for (let j = 0; j < cols && empty; j++) empty = masks(mask.data[base + i * cols + j]);
      if (empty) return { row: i, entry: base / (rows * cols) };
    }
  }
  return null;
}

/**
 * For a mask that attention reads as its leading square [:T, :T] (nanoGPT's `bias[:, :, :T, :T]`, or
 * an elementwise function of it: a slice commutes with elementwise ops), the largest n such that every
 * T <= n gives a causal mask. The slice rule: element [i, j] of the slice is element [i, j] of the full
 * mask, and "attend iff j <= i" speaks of i and j alone, so the square [:T, :T] is causal iff no element
 * with i, j < T breaks the rule; an element [i, j] that breaks it spoils exactly the squares with
 * T > max(i, j). So one pass over the full mask proves every T at once: n is the smallest max(i, j) of
 * a breaking element, or the full size when none breaks it (the whole buffer is lower-triangular).
 */
export function causalPrefix(mask: HostTensor, kind: MaskKind, label: string): { rows: number; reason: string } {
  const shape = mask.type.shape;
  const [rows, cols] = [shape[shape.length - 2] ?? 1, shape[shape.length - 1] ?? 1];
  let n = Math.min(rows, cols);
  let reason = `mask ${label} is lower-triangular over its full [${rows},${cols}], so every leading square [:T, :T] with T <= ${n} is causal`;
  for (let idx = 0; idx < mask.data.length; idx++) {
    const [i, j] = [Math.floor(idx / cols) % rows, idx % cols];
    if (Math.max(i, j) >= n) continue;
    const value = mask.data[idx];
    const attends = attendsBy(value, kind);
    if (attends === j <= i) continue;
    n = Math.max(i, j);
    reason = `mask ${label} is causal only for T <= ${n}: element [${i}, ${j}] is ${value}, so at T > ${n} query ${i} ${attends === null ? 'gets a finite additive score' : attends ? 'attends to' : 'does not attend to'} key ${j}`;
  }
  return { rows: n, reason };
}
