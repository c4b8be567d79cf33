// Wraps an op's KernelPlan into a full WGSL module: a header naming the IR node and source line,
// the `params` uniform struct, named storage bindings, and `main` with the linear indices a plan uses.

import type { Node } from '../ir/graph.ts';
import type { DType } from '../ir/types.ts';
import { printNode } from '../ir/text.ts';
import { ENABLE_F16, usesF16 } from './wgsl/dtypes.ts';
import { storageType } from './wgsl/helpers.ts';
import type { KernelPlan } from './wgsl/plan.ts';
import { indexErrorDecls } from './index-errors.ts';

/** The most workgroups along one dispatch dimension (WebGPU's default and usual limit). */
export const MAX_GROUPS_PER_DIM = 65535;

/** Spreads a linear workgroup count over x and y; `main` folds them back into `wid`. */
export function dispatchShape(workgroups: number, maxPerDim = MAX_GROUPS_PER_DIM): [number, number, number] {
  if (workgroups <= maxPerDim) return [workgroups, 1, 1];
  const y = Math.ceil(workgroups / maxPerDim);
  if (y > maxPerDim) throw new Error(`${workgroups} workgroups exceed ${maxPerDim}^2`);
  return [Math.ceil(workgroups / y), y, 1];
}

/** `%12 = matmul(%10, %11) : f32[2,4,24,24]`: the node's IR line without its source comment, for messages that carry the location already. */
export function describeNode(node: Node): string {
  const line = printNode(node);
  const comment = line.indexOf('  # ');
  return comment < 0 ? line : line.slice(0, comment);
}

export interface StorageInput {
  readonly name: string;
  readonly dtype: DType;
}

/** How a kernel that reads indices reports bad ones: into a record (`checked`), or not at all. */
export type IndexReports = 'none' | 'checked' | 'unchecked';

/** Field names of the params struct, in order: the plan's, `error_slot` if it reports bad indices, then `groups` (the real workgroup count). */
export function paramNames(plan: KernelPlan, reports: IndexReports = 'none'): string[] {
  return [...Object.keys(plan.params), ...(reports === 'checked' ? ['error_slot'] : []), 'groups'];
}

export function moduleText(node: Node, plan: KernelPlan, inputs: readonly StorageInput[], reports: IndexReports = 'none'): string {
  const text = moduleBody(node, plan, inputs, reports);
  // f16 storage (or f16 values a lowering declares) needs the extension enabled before any declaration.
  if (!usesF16(text) || plan.directives?.includes(ENABLE_F16)) return text;
  const header = text.indexOf('\n') + 1;
  return text.slice(0, header) + ENABLE_F16 + '\n' + text.slice(header);
}

function moduleBody(node: Node, plan: KernelPlan, inputs: readonly StorageInput[], reports: IndexReports): string {
  const bindings = inputs.map((x, i) => `@group(0) @binding(${i + 1}) var<storage, read> ${x.name}: array<${plan.bindingTypes?.[x.name] ?? storageType(x.dtype)}>;`);
  bindings.push(`@group(0) @binding(${inputs.length + 1}) var<storage, read_write> out: array<${storageType(node.type.dtype)}>;`);
  if (reports !== 'none') bindings.push(indexErrorDecls(reports === 'checked' ? inputs.length + 2 : null));
  const fields = paramNames(plan, reports).map((name) => `  ${name}: u32,`);
  return `// ${printNode(node)}
${plan.directives ? plan.directives.join('\n') + '\n' : ''}
struct Params {
${fields.join('\n')}
}
@group(0) @binding(0) var<uniform> params: Params;
${bindings.join('\n')}
${plan.decls ? '\n' + plan.decls.trim() + '\n' : ''}
@compute @workgroup_size(${plan.workgroupSize})
fn main(@builtin(workgroup_id) group_id: vec3<u32>, @builtin(num_workgroups) group_count: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = group_id.y * group_count.x + group_id.x;
  // Past 65535 workgroups the grid is rounded up to a rectangle: the extra ones stop here.
  if (wid >= params.groups) { return; }
  let gid = wid * ${plan.workgroupSize}u + lid;
${plan.body.replace(/\s+$/, '')}
}
`;
}
