// Operands by name: an op's registry entry may declare them (`operands: ['q', 'k', 'v', 'mask?', 'rng?']`,
// as MLIR's ODS declares operand segments); a trailing `?` marks an optional one.
//
// Optional operands a node has fill their places in declaration order. A node that leaves one out
// before a later one it has (sdpa with an rng but no mask) says which it has in its `optional` attr
// (`optional="rng"`, as MLIR's operandSegmentSizes); otherwise it has no such attr, so each
// computation has one spelling. Nothing tells operands apart by their dtype.

import { KilnError } from './errors.ts';
import type { Attrs } from './graph.ts';
import type { OpDef } from './registry.ts';

/** The attr naming a node's optional operands when one is skipped before a later one. */
export const OPTIONAL_ATTR = 'optional';

/** An operand's name without its optional mark. */
export const operandName = (declared: string): string => declared.replace(/\?$/, '');

export const isOptional = (declared: string): boolean => declared.endsWith('?');

/** The declared names a node of `def` with `count` operands and these attrs has, in order; undefined when they do not fit. */
function presentNames(def: OpDef, count: number, attrs: Attrs): string[] | undefined {
  const declared = def.operands!;
  const required = declared.filter((d) => !isOptional(d)).map(operandName);
  const optional = declared.filter(isOptional).map(operandName);
  const listed = attrs[OPTIONAL_ATTR];
  if (count < required.length) return undefined;
  const present = typeof listed === 'string' ? listed.split(',') : optional.slice(0, count - required.length);
  if (!present.every((n) => optional.includes(n)) || required.length + present.length !== count) return undefined;
  return declared.map(operandName).filter((n) => required.includes(n) || present.includes(n));
}

/** A node's operands by declared name (absent optional ones undefined); `def` must declare its operands. */
export function operandsByName<T>(def: OpDef, inputs: readonly T[], attrs: Attrs): Record<string, T | undefined> {
  const names = presentNames(def, inputs.length, attrs);
  if (!names) throw new KilnError('KILN_E011', checkOperands(def, inputs.length, attrs) as string);
  return Object.fromEntries(names.map((n, i) => [n, inputs[i]]));
}

/**
 * The operand list of a node of `def` from operands by name, and its attrs with the `optional` attr
 * set when a skipped optional operand needs it (and removed when not).
 */
export function namedOperands<T>(def: OpDef, named: Readonly<Record<string, T | undefined>>, attrs: Attrs): { inputs: T[]; attrs: Attrs } {
  const declared = def.operands!;
  const inputs: T[] = [];
  const present: string[] = [];
  let skipped = false;
  let needsList = false;
  for (const d of declared) {
    const value = named[operandName(d)];
    if (value === undefined) {
      if (!isOptional(d)) throw new Error(`${def.name} needs its operand ${d}`);
      skipped = true;
      continue;
    }
    if (isOptional(d)) {
      present.push(operandName(d));
      needsList ||= skipped;
    }
    inputs.push(value);
  }
  const { [OPTIONAL_ATTR]: _, ...rest } = attrs;
  return { inputs, attrs: needsList ? { ...rest, [OPTIONAL_ATTR]: present.join(',') } : rest };
}

/** True when a node of `def` with `count` operands and these attrs fits its declaration (or it declares none), else why not: for the verifier. */
export function checkOperands(def: OpDef, count: number, attrs: Attrs): true | string {
  if (!def.operands) return true;
  const names = presentNames(def, count, attrs);
  if (!names) {
    const min = def.operands.filter((d) => !isOptional(d)).length;
    const want = min === def.operands.length ? `${min}` : `${min} to ${def.operands.length}`;
    const listed = attrs[OPTIONAL_ATTR] !== undefined ? ` with ${OPTIONAL_ATTR}="${String(attrs[OPTIONAL_ATTR])}"` : '';
    return `${def.name} takes ${def.operands.join(', ')} (${want} operands), got ${count}${listed}`;
  }
  const canonical = namedOperands(def, Object.fromEntries(names.map((n) => [n, n])), attrs).attrs[OPTIONAL_ATTR];
  if (canonical !== attrs[OPTIONAL_ATTR]) return `${def.name}'s ${OPTIONAL_ATTR} attr must be ${canonical === undefined ? 'absent (no optional operand is skipped)' : `"${String(canonical)}"`}`;
  return true;
}
