// The record a kernel writes when it meets an index outside its range (ops with `indices`, ir/bounds.ts),
// and how the runtime reads it back. Each checking kernel of a program has a slot of four u32 words:
//   0  how many bad indices        1  ~(the first one's position): atomicMax keeps the smallest position
//   2  the largest value's key     3  ~(the smallest value's key)   (key = i32 bits ^ 0x80000000, ordered as u32)
// Atomics give these the same whatever order the threads run in. A zeroed slot means no bad index.

import type { IndexFaults } from '../ir/bounds.ts';

/** The binding's name in generated WGSL. */
export const INDEX_ERRORS = 'index_errors';
/** u32 words of one kernel's slot. */
export const RECORD_WORDS = 4;

/**
 * Module-scope WGSL for a kernel that checks indices: the record binding and `report_bad_index`, which
 * writes the kernel's slot (`params.error_slot`). Unchecked (`binding` null, `checkBounds: false`): a
 * `report_bad_index` that does nothing, so the plan's text stays the same.
 */
export function indexErrorDecls(binding: number | null): string {
  if (binding === null) return 'fn report_bad_index(position: u32, value: i32) {} // index checks are off (checkBounds: false)';
  return `@group(0) @binding(${binding}) var<storage, read_write> ${INDEX_ERRORS}: array<atomic<u32>>;

// An index outside its range: kiln reads this slot back after the run and raises KILN_E011.
fn report_bad_index(position: u32, value: i32) {
  let at = params.error_slot * ${RECORD_WORDS}u;
  let key = bitcast<u32>(value) ^ 0x80000000u;
  atomicAdd(&${INDEX_ERRORS}[at], 1u);
  atomicMax(&${INDEX_ERRORS}[at + 1u], ~position);
  atomicMax(&${INDEX_ERRORS}[at + 2u], key);
  atomicMax(&${INDEX_ERRORS}[at + 3u], ~key);
}`;
}

/** The faults a slot of a read-back record holds, or null when it holds none. */
export function decodeIndexFaults(words: Uint32Array, slot: number): IndexFaults | null {
  const at = slot * RECORD_WORDS;
  const count = words[at];
  if (count === 0) return null;
  const value = (key: number) => (key ^ 0x80000000) | 0;
  return { count, first: ~words[at + 1] >>> 0, max: value(words[at + 2]), min: value(~words[at + 3]) };
}
