// WGSL lowerings of the tensors made from attributes alone (ir/ops/leaf.ts): full, arange. The
// leaves proper (input, param, buffer, constant, rng) are fed by the runtime and get no kernel.

import { F32_BITS_WGSL, constDecl, f32FromBits, generateKernel, store } from './helpers.ts';
import type { Lowering } from './plan.ts';

export const leafLowerings: Record<string, Lowering> = {
  full({ attrs, out }) {
    const value = attrs.value as number;
    // full(-inf) (an additive mask's start) holds a real -inf, as on the CPU.
    if (out.dtype === 'f32' && !Number.isFinite(value)) return generateKernel(out, {}, [], F32_BITS_WGSL, [`out[gid] = ${f32FromBits(value)};`]);
    return generateKernel(out, {}, [], constDecl('VALUE', out.dtype, value), [`out[gid] = ${store(out.dtype, 'VALUE')};`]);
  },
  arange({ attrs, out }) {
    // A bool arange is 0/1 by truthiness of start + i * step, computed in f32 as the CPU does in f64.
    const math = out.dtype === 'i32' ? 'i32' : 'f32';
    const consts = [constDecl('START', math, attrs.start as number), constDecl('STEP', math, attrs.step as number)].join('\n');
    const value = `START + ${math}(gid) * STEP`;
    return generateKernel(out, {}, [], consts, [`out[gid] = ${out.dtype === 'bool' ? `select(0u, 1u, ${value} != 0.0)` : value};`]);
  },
};
