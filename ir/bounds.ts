// Index checks: ops that index with data (embedding's token ids, cross_entropy's targets) raise KILN_E011
// for an index outside its range, on every backend. The CPU reference and the GPU kernels gather the same
// facts about the bad indices (how many, where the first is, the smallest and the largest: facts a GPU's
// atomics get the same whatever order its threads run in), and `indexError` words them, so both backends
// raise the same line.

import { KilnError, type SourceLoc } from './errors.ts';
import { type Shape, numel } from './types.ts';

/** What an op's index operand may hold: an op entry's `indices` (ir/registry.ts) says it. */
export interface IndexRange {
  /** The op the user called, as the message names it (embedding_backward's indices are embedding's). */
  readonly op: string;
  readonly noun: 'index' | 'target';
  /** The operand (position in node.inputs) that holds the indices. */
  readonly operand: number;
  /** Valid indices are [0, size). */
  readonly size: number;
  /** The index operand's shape: the message gives the first bad one's coordinates in it. */
  readonly shape: Shape;
  /** A value that is skipped rather than checked (cross_entropy's ignoreIndex). */
  readonly ignore?: number;
}

/** The indices outside the range: their count, the first one's flat position, the smallest and the largest. */
export interface IndexFaults {
  readonly count: number;
  readonly first: number;
  readonly min: number;
  readonly max: number;
}

export function isOutside(v: number, range: IndexRange): boolean {
  return v !== range.ignore && !(v >= 0 && v < range.size);
}

/** The facts `indexError` words, from the indices themselves (the CPU reference, and host data before an upload). */
export function findIndexFaults(indices: ArrayLike<number>, range: IndexRange): IndexFaults | null {
  let count = 0;
  let first = -1;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < indices.length; i++) {
    const v = indices[i];
    if (!isOutside(v, range)) continue;
    if (count++ === 0) first = i;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  return count === 0 ? null : { count, first, min, max };
}

/**
 * `embedding index 96 at [0, 5] is outside [0, 96)` for one bad index; for more, how many, their values
 * and where the first is: `3 embedding indices are outside [0, 96), from -1 to 100 (the first at [0, 5])`.
 */
export function indexError(range: IndexRange, faults: IndexFaults, loc?: SourceLoc): KilnError {
  const where = range.noun === 'target' && range.shape.length === 1 ? `row ${faults.first}` : `[${coordinates(faults.first, range.shape).join(', ')}]`;
  const bounds = `[0, ${range.size})`;
  if (faults.count === 1) return new KilnError('KILN_E011', `${range.op} ${range.noun} ${faults.min} at ${where} is outside ${bounds}`, loc);
  const nouns = range.noun === 'index' ? 'indices' : 'targets';
  const values = faults.min === faults.max ? `all ${faults.min}` : `from ${faults.min} to ${faults.max}`;
  return new KilnError('KILN_E011', `${faults.count} ${range.op} ${nouns} are outside ${bounds}, ${values} (the first at ${where})`, loc);
}

/** Throws indexError for the indices outside the range, if any: what the CPU references call first. */
export function checkIndices(indices: ArrayLike<number>, range: IndexRange, loc?: SourceLoc): void {
  const faults = findIndexFaults(indices, range);
  if (faults) throw indexError(range, faults, loc);
}

function coordinates(flat: number, shape: Shape): number[] {
  if (flat >= numel(shape)) return [flat];
  const coords = shape.map(() => 0);
  for (let d = shape.length - 1; d >= 0; d--) {
    coords[d] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return coords;
}
