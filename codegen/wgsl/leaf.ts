// WGSL lowerings of the tensors made from attributes alone (ir/ops/leaf.ts): full, arange. The
// leaves proper (input, param, buffer, constant, rng) are fed by the runtime and get no kernel.

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { roundOutput } from '../../ir/host.ts';
import { F32_BITS_WGSL, constDecl, f32FromBits, generateKernel, store, valueType } from './helpers.ts';
import type { Lowering } from './plan.ts';

export const leafLowerings: Record<string, Lowering> = {
  full({ attrs, out }) {
    // An f16 fill is rounded here, as the CPU reference rounds its output: f16(VALUE) of a constant
    // that overflows f16 would fail to compile, so one that rounds to an infinity is written as one.
    const [value] = roundOutput(out.dtype, Float64Array.of(attrs.value as number), 'f32');
    // full(-inf) (an additive mask's start) holds a real -inf, as on the CPU.
    if (DTYPE_INFO[out.dtype].isFloat && !Number.isFinite(value)) return generateKernel(out, {}, [], F32_BITS_WGSL, [`out[gid] = ${store(out.dtype, f32FromBits(value))};`]);
    return generateKernel(out, {}, [], constDecl('VALUE', valueType(out.dtype), value), [`out[gid] = ${store(out.dtype, 'VALUE')};`]);
  },
  arange({ attrs, out }) {
    // A bool arange is 0/1 by truthiness of start + i * step, computed in f32 as the CPU does in f64; an f16 one is stored rounded.
    const math = DTYPE_INFO[out.dtype].isInt ? out.dtype : 'f32';
    const consts = [constDecl('START', math, attrs.start as number), constDecl('STEP', math, attrs.step as number)].join('\n');
    const value = `START + ${math}(gid) * STEP`;
    return generateKernel(out, {}, [], consts, [`out[gid] = ${store(out.dtype, out.dtype === 'bool' ? `${value} != 0.0` : value)};`]);
  },
};
