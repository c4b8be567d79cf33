// Leaves and constants: model inputs, parameters and buffers, the call's random stream (fed by the
// runtime), and tensors made from attributes alone (full, arange). Their type lives in attrs `dtype` and `shape`.

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import { type DType, type TensorType, formatType, isDType, numel, sameType } from '../types.ts';
import { numAttr } from './check.ts';

export function typeFromAttrs(op: string, attrs: Attrs): TensorType {
  const { dtype, shape } = attrs;
  if (typeof dtype !== 'string' || !isDType(dtype)) throw new KilnError('KILN_E011', `${op} needs a dtype attribute, got ${String(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new KilnError('KILN_E011', `${op} needs a shape attribute of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return { dtype: dtype as DType, shape: [...shape] };
}

/** The type of the `rng` leaf: one i32 (0-d). */
export const RNG_TYPE: TensorType = { dtype: 'i32', shape: [] };

/** A leaf op; `fixed` is the one type it may have, if any. */
function leaf(name: string, fixed?: TensorType): void {
  registerOp({
    name,
    leaf: true,
    typeInAttrs: true,
    infer(inputs, attrs) {
      if (inputs.length !== 0) throw new KilnError('KILN_E011', `${name} takes no inputs`);
      if (typeof attrs.name !== 'string') throw new KilnError('KILN_E011', `${name} needs a name attribute`);
      const t = typeFromAttrs(name, attrs);
      if (fixed && !sameType(t, fixed)) throw new KilnError('KILN_E011', `${name} is ${formatType(fixed)}, got ${formatType(t)}`);
      return t;
    },
    cpu() {
      throw new Error(`${name} nodes are fed by the runtime, not computed`);
    },
  });
}

leaf('input'); // a forward() argument: {name="idx"}
leaf('param'); // a parameter, by state-dict key: {name="transformer.wte.weight"}
leaf('buffer'); // a registered buffer, by state-dict key: {name="transformer.h.0.attn.bias"}
leaf('constant'); // a value computed at compile time (constant folding), held in graph.constants: {name="c31"}
// The call's random stream: one i32 the runtime draws fresh on every call (compiler/leaves.ts, from
// manualSeed's stream), so a compiled graph's dropout masks change per call. At most one per graph: {name="rng"}
leaf('rng', RNG_TYPE);

// full() {value, dtype, shape}: a tensor of one value (torch.full, ones, zeros).
registerOp({
  name: 'full',
  typeInAttrs: true,
  infer(inputs, attrs) {
    if (inputs.length !== 0) throw new KilnError('KILN_E011', 'full takes no inputs');
    numAttr('full', attrs, 'value');
    return typeFromAttrs('full', attrs);
  },
  cpu(_inputs, attrs, out, precision) {
    return allocData(out.dtype, numel(out.shape), precision).fill(attrs.value as number);
  },
});

// arange() {start, step, dtype, shape=[n]}: start, start+step, ... (torch.arange).
registerOp({
  name: 'arange',
  typeInAttrs: true,
  infer(inputs, attrs) {
    if (inputs.length !== 0) throw new KilnError('KILN_E011', 'arange takes no inputs');
    numAttr('arange', attrs, 'start');
    numAttr('arange', attrs, 'step');
    const t = typeFromAttrs('arange', attrs);
    if (t.shape.length !== 1) throw new KilnError('KILN_E011', 'arange makes a 1-d tensor');
    return t;
  },
  cpu(_inputs, attrs, out, precision) {
    const data = allocData(out.dtype, numel(out.shape), precision);
    const start = attrs.start as number;
    const step = attrs.step as number;
    for (let i = 0; i < data.length; i++) data[i] = start + i * step;
    return data;
  },
});
