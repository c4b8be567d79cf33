// The epilogue of a matmul_epilogue node (ir/ops/matmul_epilogue.ts) in WGSL: a function that takes one
// f32 sum of the product at (row, col) of this workgroup's batch matrix and gives the chain's value
// there, for both matmul kernels (linalg.ts, matmul_tc.ts) to apply before their one store. The chain
// is fused_elementwise's, composed by the same code (elementwise.ts composeWgsl); its operands are read
// through strides over the output [...batch, M, N], 0 where they broadcast (a bias [N]: 0 along rows).

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { type Expr, castTarget, exprOf } from '../../ir/ops/fused_elementwise.ts';
import type { DType, TensorType } from '../../ir/types.ts';
import { ROUND_F16_WGSL, roundF16Wgsl } from './dtypes.ts';
import { composeWgsl } from './elementwise.ts';
import { broadcastStrides, listParams, load, offsetExpr } from './helpers.ts';
import type { KernelRequest } from './plan.ts';

export interface MatmulEpilogue {
  /** The chain's operands' bindings, after a and b. */
  readonly inputNames: string[];
  readonly params: Record<string, number>;
  readonly decls: string;
  /** Lines for the kernel's body after matmulTileLines (its batch coordinates i0..): each operand's batch offset. */
  readonly setup: string[];
  /** The chain's value (f32) at output (row, col) from the product's f32 sum `v`. */
  readonly apply: (row: string, col: string, v: string) => string;
}

/** A chain whose last op is a cast to the output's float dtype needs no cast: the store is it. */
function withoutFinalCast(e: Expr, out: DType): Expr {
  return 'op' in e && castTarget(e.op) === out && DTYPE_INFO[out].isFloat ? e.args[0] : e;
}

/** The epilogue of a matmul_epilogue request, or undefined for a plain matmul. */
export function matmulEpilogue(req: KernelRequest, rank: number): MatmulEpilogue | undefined {
  if (req.attrs.expr === undefined) return undefined;
  const [a, , ...extras] = req.inputs as TensorType[];
  const names = extras.map((_, i) => `e${i + 1}`);
  const params: Record<string, number> = {};
  for (const [i, x] of extras.entries()) Object.assign(params, listParams(`${names[i]}_stride`, broadcastStrides(req.out.shape, x.shape)));
  // The product as the matmul node would have stored it: f16 operands give an f16 product, rounded once (ties to even, as the CPU's roundF16).
  const product = a.dtype === 'f16' ? roundF16Wgsl('v') : 'v';
  const chain = composeWgsl(withoutFinalCast(exprOf(req.attrs), req.out.dtype));
  const args = ['p', ...extras.map((x, i) => load(names[i], x.dtype, `${names[i]}_base + row * params.${names[i]}_stride${rank} + col * params.${names[i]}_stride${rank + 1}`))];
  const decls = [
    ...(chain.decls ? [chain.decls] : []),
    ...(a.dtype === 'f16' && !chain.decls?.includes('fn kiln_round_f16_1') ? [ROUND_F16_WGSL] : []),
    ...names.map((n) => `var<private> ${n}_base: u32; // ${n}'s offset for this workgroup's batch matrix`),
    `// The chain ${String(req.attrs.expr)} at output (row, col), $0 the product's sum v.`,
    'fn epilogue(row: u32, col: u32, v: f32) -> f32 {',
    `  let p = ${product};`,
    `  return ${chain.expr(...args)};`,
    '}',
  ];
  return {
    inputNames: names,
    params,
    decls: decls.join('\n'),
    setup: names.map((n) => `${n}_base = ${offsetExpr(rank, 'i', `${n}_stride`)};`),
    apply: (row, col, v) => `epilogue(${row}, ${col}, ${v})`,
  };
}
