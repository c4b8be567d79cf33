// codegen: IR nodes -> WGSL kernels. Each op's lowering (codegen/wgsl/<family>.ts, found by op name in
// codegen/wgsl/index.ts) plans its kernel; this folder wraps plans into full modules, validates them,
// derives their bindings, and orders a graph.
//
// API:
//   lowerNode(node, limits?): Kernel | null   one node's kernel; null for leaves and aliases (eager mode)
//   lowerGraph(graph, limits?): Program       kernels in node order, plus storageOf() for alias chains
//   kernelFromPlan(node, plan): Kernel        wraps a plan made by hand (tests of one lowering's variants)
//   limits                                    the device's (kdev.limits): some lowerings size their tiles
//                                             by them; absent means WebGPU's defaults
//   Kernel.bindings                           from reflecting the generated text: binding 0 is the params
//                                             uniform, 1..n the read-only inputs (Kernel.inputs, same order),
//                                             last the read_write `out`
//   Kernel.params                             the uniform's u32 words (at least 16 bytes, as uniforms need)
//   Kernel.workgroups                         the dispatch grid, spread over x and y past 65535
//   Kernel.indexCheck                         set when the kernel checks the indices it reads (op entries with
//                                             `indices`): it reports bad ones into slot `slot` of an error
//                                             record bound as `index_errors` (codegen/index-errors.ts);
//                                             `{ checkBounds: false }` lowers them without the check
// Running them is runtime/webgpu's job: Executor for a Program, runKernel for one eager node.

import type { IndexRange } from '../ir/bounds.ts';
import { KilnError } from '../ir/errors.ts';
import { type Graph, type Node, isNode } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { type IndexReports, describeNode, dispatchShape, moduleText, paramNames } from './module.ts';
import { type ReflectedBinding, reflectBindings } from './reflect.ts';
import { loweringOf } from './wgsl/index.ts';
import type { KernelLimits, KernelPlan, KernelRequest } from './wgsl/plan.ts';

export { describeNode, dispatchShape, MAX_GROUPS_PER_DIM } from './module.ts';
export { decodeIndexFaults, RECORD_WORDS } from './index-errors.ts';
export type { ReflectedBinding } from './reflect.ts';

export interface Kernel {
  readonly node: Node;
  /** The full WGSL module, starting with a comment naming the node. */
  readonly code: string;
  /** The module without that comment: kernels with equal keys share one pipeline, whatever their shapes. */
  readonly key: string;
  /** `%12 matmul model.ts:58:15`: names pipelines and bind groups so WebGPU messages point back here. */
  readonly label: string;
  readonly bindings: readonly ReflectedBinding[];
  /** The dispatch grid; a kernel with no work (an empty tensor) has [0, 1, 1] and is skipped. */
  readonly workgroups: [number, number, number];
  readonly params: Uint32Array;
  /** The tensor operands the kernel reads, in binding order (bindings 1..n). */
  readonly inputs: readonly Node[];
  /** Present when the kernel checks the indices it reads: which operand, their range, its record slot. */
  readonly indexCheck?: KernelIndexCheck;
}

export interface KernelIndexCheck {
  readonly range: IndexRange;
  /** The operand holding the indices (node.inputs[range.operand]). */
  readonly indices: Node;
  /** The kernel's slot in its program's error record. */
  readonly slot: number;
  /** The flat position of the first index it reads: a window's kernel (codegen/split.ts) reports positions from there. */
  readonly firstPosition?: number;
}

export interface LowerOptions {
  /** Kernels that read indices check them (default true); false leaves the check out (`{ checkBounds: false }`). */
  readonly checkBounds?: boolean;
  /** The error-record slot of this kernel, when it checks indices (lowerGraph numbers them from 0). */
  readonly errorSlot?: number;
}

export interface Program {
  readonly graph: Graph;
  readonly kernels: readonly Kernel[];
  /** The node whose buffer holds this node's value: itself, or the end of its alias chain. */
  storageOf(node: Node): Node;
}

/** True when the node gets no kernel: a leaf fed by the runtime, or a view of its input's storage. */
export function needsNoKernel(node: Node): boolean {
  const def = getOp(node.op, node.loc);
  return def.leaf === true || (def.alias?.(node.attrs) ?? false);
}

export function kernelLabel(node: Node): string {
  return `%${node.id} ${node.op}${node.loc ? ` ${node.loc.file}:${node.loc.line}:${node.loc.col}` : ''}`;
}

export function lowerNode(node: Node, limits?: KernelLimits, options: LowerOptions = {}): Kernel | null {
  if (needsNoKernel(node)) return null;
  const lowering = loweringOf(node.op, describeNode(node), node.loc);
  const req: KernelRequest = { inputs: node.inputs.map((x) => (isNode(x) ? x.type : x)), attrs: node.attrs, out: node.type, limits };
  let plan;
  try {
    plan = lowering(req);
  } catch (e) {
    throw e instanceof KilnError ? e.at(node.loc) : e;
  }
  return kernelFromPlan(node, plan, options);
}

export function kernelFromPlan(node: Node, plan: KernelPlan, options: LowerOptions = {}): Kernel {
  const inputs = node.inputs.filter(isNode);
  if (inputs.length !== plan.inputNames.length) {
    throw new Error(`${node.op} lowering names ${plan.inputNames.length} inputs for ${inputs.length} tensor operands`);
  }
  const range = getOp(node.op, node.loc).indices?.(node.inputs.map((x) => (isNode(x) ? x.type : x)), node.attrs);
  if (range && !plan.body.includes('report_bad_index(')) throw new Error(`${node.op} reads indices, but its kernel never calls report_bad_index`);
  const reports: IndexReports = !range ? 'none' : options.checkBounds === false ? 'unchecked' : 'checked';
  const slot = options.errorSlot ?? 0;
  const code = moduleText(node, plan, inputs.map((x, i) => ({ name: plan.inputNames[i], dtype: x.type.dtype })), reports);
  const bindings = reflectBindings(code, node);
  const names = paramNames(plan, reports);
  const words = names.map((name) => (name === 'groups' ? plan.workgroups : name === 'error_slot' ? slot : plan.params[name]));
  for (const [i, w] of words.entries()) {
    if (!Number.isInteger(w) || w < 0 || w > 0xffffffff) throw new Error(`${node.op} param ${names[i]} = ${w} is not a u32`);
  }
  // Uniform bindings are read in 16-byte units: pad the words to a multiple of four.
  const params = new Uint32Array(Math.ceil(words.length / 4) * 4);
  params.set(words);
  const key = code.slice(code.indexOf('\n') + 1);
  const indexCheck = range && reports === 'checked' ? { range, indices: node.inputs[range.operand] as Node, slot } : undefined;
  return { node, code, key, label: kernelLabel(node), bindings, workgroups: dispatchShape(plan.workgroups), params, inputs, indexCheck };
}

/** Kernels in node order; those that check indices get error-record slots 0, 1, ... in that order. */
export function lowerGraph(graph: Graph, limits?: KernelLimits, options: Pick<LowerOptions, 'checkBounds'> = {}): Program {
  const storage = new Map<Node, Node>();
  const storageOf = (node: Node): Node => storage.get(node) ?? node;
  const kernels: Kernel[] = [];
  let slots = 0;
  for (const node of graph.nodes) {
    const def = getOp(node.op, node.loc);
    if (def.alias?.(node.attrs)) {
      const src = node.inputs[0];
      if (!src || !isNode(src)) throw new KilnError('KILN_E012', `alias ${describeNode(node)} needs a tensor input`, node.loc);
      storage.set(node, storageOf(src));
      continue;
    }
    const kernel = lowerNode(node, limits, { ...options, errorSlot: slots });
    if (kernel?.indexCheck) slots++;
    if (kernel) kernels.push(kernel);
  }
  return { graph, kernels, storageOf };
}
