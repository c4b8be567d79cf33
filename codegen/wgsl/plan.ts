// The contract between an op's WGSL lowering (codegen/wgsl/<family>.ts, found by op name in
// codegen/wgsl/index.ts) and codegen/module.ts, which wraps the plan into a full WGSL module: header
// comment, `params` uniform struct, named storage bindings, `main`. Shared text helpers: ./helpers.ts.
//
// What codegen provides around a plan, so a lowering only writes its own logic:
// - `struct Params { <each key of plan.params>: u32, groups: u32 }` bound as `params` (binding 0);
//   shapes and strides live here, never in the text, so equal text means a reused pipeline.
// - one `var<storage, read>` per name in `inputNames` (bindings 1..n, element type from the input's
//   dtype: f32, i32, or u32 for bool), then `out` as `var<storage, read_write>`.
// - `main` with `wid` (linear workgroup index, spread over x and y past 65535 workgroups), `lid`
//   (local index) and `gid = wid * workgroupSize + lid`; it returns before the body when
//   `wid >= workgroups`, a uniform branch, so bodies that use barriers stay valid.
// - for ops whose entry has `indices` (ir/bounds.ts): `fn report_bad_index(position: u32, value: i32)`,
//   which the body calls once for each index outside its range (./helpers.ts reportBadIndex) and
//   which writes the run's error record (codegen/index-errors.ts), or does nothing with checks off.

import type { Attrs } from '../../ir/graph.ts';
import type { KernelLimits } from '../../ir/limits.ts';
import type { OperandType } from '../../ir/registry.ts';
import type { TensorType } from '../../ir/types.ts';

export type { KernelLimits } from '../../ir/limits.ts';
export { DEFAULT_KERNEL_LIMITS } from '../../ir/limits.ts';

export interface KernelRequest {
  /** Tensor types of the inputs, or the values of scalar literal operands. */
  readonly inputs: readonly OperandType[];
  readonly attrs: Attrs;
  readonly out: TensorType;
  /** The device's limits, where a lowering sizes its tiles by them; absent means WebGPU's defaults. */
  readonly limits?: KernelLimits;
}

export interface KernelPlan {
  /** Binding names of the tensor inputs in operand order (scalar operands have none); the output is `out`. */
  readonly inputNames: readonly string[];
  /** Module directives the text needs before any declaration (`enable subgroups;`); the lowering only asks for what the limits offer. */
  readonly directives?: readonly string[];
  /** Element types of storage bindings other than their dtype's (`vec4<u32>` to read 8 f16s at once); the buffer is the same. */
  readonly bindingTypes?: Readonly<Record<string, string>>;
  /** u32 values the kernel reads as `params.<name>`: sizes, strides. Shapes live here, not in the text. */
  readonly params: Readonly<Record<string, number>>;
  /** Module-scope WGSL: named consts, helper functions, workgroup arrays. */
  readonly decls?: string;
  /** The body of `main`. In scope: `gid: u32` (linear invocation index), `lid: u32` (local index), `wid: u32` (linear workgroup index). */
  readonly body: string;
  readonly workgroupSize: number;
  /** Linear workgroup count; codegen spreads it over x and y when it exceeds 65535. */
  readonly workgroups: number;
}

/** An op's WGSL lowering: its plan for one node's operand types, attrs and output type. */
export type Lowering = (req: KernelRequest) => KernelPlan;
