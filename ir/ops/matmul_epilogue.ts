// matmul_epilogue(a, b, x1, ...) {transposeA, transposeB, expr}: a matmul whose product goes through an
// elementwise chain before its one store (nanoGPT: c_fc then bias and GELU, c_proj then bias and the
// residual add), one kernel instead of two. Made by the lowered-stage pass passes/matmul-epilogue.ts,
// after differentiation, so it has no gradient rule: no graph that is differentiated holds one.
//
// `expr` is a fused_elementwise chain (ir/ops/fused_elementwise.ts) over $0, the product a @ b as the
// matmul node would have stored it (its dtype: f16 operands give an f16 product, rounded once), and
// $1, $2, ... the operands x1, x2, ... broadcast into the product's shape (a bias [N], a residual of
// the product's shape). Its meaning is exactly the unfused pair's: the product, then the chain.

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { roundOutput } from '../host.ts';
import { type OperandType, getOp, registerOp } from '../registry.ts';
import { type TensorType, formatType, sameShape } from '../types.ts';

/** The product's type and the chain's operands, checked: a, b are the matmul's, the rest tensors of a float dtype. */
function operandsOf(inputs: readonly OperandType[]): { a: TensorType; b: TensorType; extras: TensorType[] } {
  if (inputs.length < 2) throw new KilnError('KILN_E002', `matmul_epilogue takes a, b and the chain's operands, got ${inputs.length} operands`);
  const tensors = inputs.map((x, i) => {
    if (typeof x === 'number') throw new KilnError('KILN_E002', `matmul_epilogue operand ${i} is a scalar; literals belong in expr`);
    return x;
  });
  const [a, b, ...extras] = tensors;
  return { a, b, extras };
}

const matmulAttrs = (attrs: Attrs): Attrs => ({ transposeA: attrs.transposeA ?? false, transposeB: attrs.transposeB ?? false });

registerOp({
  name: 'matmul_epilogue',
  infer(inputs, attrs) {
    const { a, b, extras } = operandsOf(inputs);
    const product = getOp('matmul').infer([a, b], matmulAttrs(attrs));
    const out = getOp('fused_elementwise').infer([product, ...extras], { expr: attrs.expr });
    if (!sameShape(out.shape, product.shape)) {
      throw new KilnError('KILN_E001', `matmul_epilogue chain ${String(attrs.expr)} gives ${formatType(out)}, not the product's shape ${formatType(product)}`);
    }
    return out;
  },
  cpu(inputs, attrs, out, precision) {
    const [a, b, ...extras] = inputs;
    const productType = getOp('matmul').infer([typeof a === 'number' ? a : a.type, typeof b === 'number' ? b : b.type], matmulAttrs(attrs));
    // The product rounded as the matmul node stores it, then the chain: bit for bit the unfused pair.
    const data = roundOutput(productType.dtype, getOp('matmul').cpu([a, b], matmulAttrs(attrs), productType, precision), precision);
    return getOp('fused_elementwise').cpu([{ type: productType, data }, ...extras], { expr: attrs.expr }, out, precision);
  },
  flops(inputs, attrs, out) {
    const { a, b, extras } = operandsOf(inputs);
    const product = getOp('matmul').infer([a, b], matmulAttrs(attrs));
    return (getOp('matmul').flops?.([a, b], matmulAttrs(attrs), product) ?? 0) + (getOp('fused_elementwise').flops?.([product, ...extras], { expr: attrs.expr }, out) ?? 0);
  },
});
