// Operands by name: an op's registry entry may declare them (`operands: ['q', 'k', 'v', 'mask?', 'rng?']`,
// as MLIR's ODS declares operand segments); a trailing `?` marks an optional one.

import type { OpDef } from './registry.ts';

/** An operand's name without its optional mark. */
export const operandName = (declared: string): string => declared.replace(/\?$/, '');

export const isOptional = (declared: string): boolean => declared.endsWith('?');

/** How many operands a node of `def` may have by its declaration: every required one, and up to all. */
export function operandCounts(def: OpDef): { min: number; max: number } | undefined {
  if (!def.operands) return undefined;
  return { min: def.operands.filter((d) => !isOptional(d)).length, max: def.operands.length };
}

/** True when `count` operands fit the op's declaration (or it declares none), else why not: for the verifier. */
export function checkOperandCount(def: OpDef, count: number): true | string {
  const counts = operandCounts(def);
  if (!counts || (count >= counts.min && count <= counts.max)) return true;
  const want = counts.min === counts.max ? `${counts.min}` : `${counts.min} to ${counts.max}`;
  return `${def.name} takes ${def.operands!.join(', ')} (${want} operands), got ${count}`;
}
