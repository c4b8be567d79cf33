// kiln kernels: the WGSL kernels of a compiled model in dispatch order, each with the IR node and user
// line it came from, its workgroup grid, its FLOPs (the op's registry estimate) and the bytes it moves.

import { type Kernel, lowerGraph } from '../../codegen/index.ts';
import { formatLoc } from '../../ir/errors.ts';
import { isNode } from '../../ir/graph.ts';
import { opFlops } from '../../ir/registry.ts';
import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import type { Command } from './main.ts';
import { DTYPE_FLAG, MODEL_FLAGS, TRAIN_FLAG, modelSession } from './model.ts';
import { getDevice } from '../../runtime/webgpu/index.ts';
import { autotuneGraph } from '../../runtime/webgpu/autotune.ts';
import type { KernelLimits } from '../../ir/limits.ts';
import { type AutotuneReport, autotuneReport, formatChoice } from './autotune-report.ts';


/** One kernel as `kiln kernels --json` reports it. */
export interface KernelReport {
  readonly index: number;
  /** The IR node's id in the `lowered` stage (`kiln dump --stage lowered`). */
  readonly node: number;
  readonly op: string;
  /** `FILE:LINE:COL`, as `kiln dump --format json` writes locs; null when unknown. */
  readonly loc: string | null;
  /** The module whose forward() made the node (`transformer.h.0.mlp.c_fc`). */
  readonly module: string | null;
  /** The user's source line, trimmed, when it could be read. */
  readonly source: string | null;
  readonly workgroups: readonly [number, number, number];
  readonly flops: number;
  /** Tensor inputs read once plus the output written once. */
  readonly bytes: number;
  readonly wgsl?: string;
  /** With --autotune, for a kernel with alternatives: each candidate's measured time, the pick and the rule's. */
  readonly autotune?: AutotuneReport;
}

export const kernelsCommand: Command = {
  spec: {
    name: 'kernels',
    summary: 'list the WGSL kernels in dispatch order, with source line, workgroups, FLOPs and bytes',
    usage: 'kiln kernels MODEL.ts [--weights W.safetensors] [--config JSON|gpt2] [--batch B] [--seq T] [--train] [--dtype float16|float32] [--wgsl] [--no-fusion] [--json] [--adapter] [--autotune]',
    example: `kiln kernels examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96,"flash":false}' --batch 2 --seq 8 --wgsl`,
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS,
      TRAIN_FLAG,
      DTYPE_FLAG,
      { name: 'wgsl', kind: 'boolean', help: "print each kernel's WGSL after its line" },
      { name: 'no-fusion', kind: 'boolean', help: 'switch off attention fusion (the fuse_attention pass), to compare' },
      { name: 'json', kind: 'boolean', help: 'print {"kernels": [...], "totals": {...}} instead of text' },
      { name: 'adapter', kind: 'boolean', help: "tile kernels for this machine's WebGPU adapter limits (default: WebGPU's default limits, no GPU needed)" },
      { name: 'autotune', kind: 'boolean', help: "time each kernel's alternatives (matmul tilings) on this machine's adapter and use the fastest, as compile({ autotune: true }); each such kernel shows the candidates' times, the pick and the rule's (implies --adapter)" },
    ],
  },

  async run(args, mod) {
    const passes = args.flags.get('no-fusion') ? { fuse_attention: false } : undefined;
    // The cpu backend: listing kernels needs the lowered graph and codegen, not a GPU.
    const session = await modelSession('kernels', args, mod, { backend: 'cpu', passes });
    // Tilings depend on the device's limits (workgroup memory, invocations): the adapter's, if asked; measured with --autotune.
    const graph = session.compilation.passes.stages.get('lowered')!;
    const tune = args.flags.get('autotune') === true;
    const limits = tune ? await autotuneGraph(await getDevice(), graph) : args.flags.get('adapter') ? (await getDevice()).limits : undefined;
    const program = lowerGraph(graph, limits);
    const withWgsl = args.flags.get('wgsl') === true;
    const kernels = program.kernels.map((k, i) => kernelReport(k, i, withWgsl, tune ? limits : undefined));
    const totals = { kernels: kernels.length, flops: sum(kernels, 'flops'), bytes: sum(kernels, 'bytes') };
    if (args.flags.get('json')) {
      console.log(JSON.stringify({ kernels, totals }, null, 2));
      return;
    }
    console.log(formatKernels(kernels));
    console.log(`${totals.kernels} kernels: ${grouped(totals.flops)} FLOPs, ${grouped(totals.bytes)} bytes moved (inputs read once, outputs written once, at each dtype's size: f16 2 bytes, f32, i32 and bool 4)`);
  },
};

/** `tuned`: the limits the kernels were autotuned under, to report each one's choice. */
export function kernelReport(k: Kernel, index: number, withWgsl = false, tuned?: KernelLimits): KernelReport {
  const { node } = k;
  const choice = tuned ? autotuneReport(node, tuned) : null;
  const operands = node.inputs.map((x) => (isNode(x) ? x.type : x));
  const bytes = k.inputs.reduce((n, x) => n + tensorBytes(x.type), tensorBytes(node.type));
  return {
    index,
    node: node.id,
    op: node.op,
    loc: node.loc ? formatLoc(node.loc) : null,
    module: node.scope ?? null,
    source: node.loc?.text ?? null,
    workgroups: k.workgroups,
    flops: opFlops(node.op, operands, node.attrs, node.type),
    bytes,
    ...(withWgsl ? { wgsl: k.code } : {}),
    ...(choice ? { autotune: choice } : {}),
  };
}

/** Bytes a tensor takes on the GPU: its elements at its dtype's size (f16 2; f32, i32 and bool, stored as u32, 4). */
function tensorBytes(type: TensorType): number {
  return numel(type.shape) * DTYPE_INFO[type.dtype].bytes;
}

/** A table, one row per kernel; a kernel's WGSL (with --wgsl) follows its row. */
export function formatKernels(kernels: readonly KernelReport[]): string {
  const rows = kernels.map((k) => [
    String(k.index),
    `%${k.node} ${k.op}`,
    `[${k.workgroups.join(',')}]`,
    grouped(k.flops),
    grouped(k.bytes),
    k.loc ? `${k.loc}${k.source ? `  ${k.source}` : ''}` : '',
  ]);
  const header = ['#', 'node', 'workgroups', 'FLOPs', 'bytes', 'source'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const numeric = [true, false, false, true, true, false];
  const line = (cells: string[]) => cells.map((cell, c) => (c === cells.length - 1 ? cell : numeric[c] ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ').trimEnd();
  const out = [line(header)];
  for (const [i, k] of kernels.entries()) {
    out.push(line(rows[i]));
    if (k.autotune) out.push(`    autotune: ${formatChoice(k.autotune)}`);
    if (k.wgsl) out.push('', k.wgsl.trimEnd(), '');
  }
  return out.join('\n');
}

function sum(kernels: readonly KernelReport[], key: 'flops' | 'bytes'): number {
  return kernels.reduce((n, k) => n + k[key], 0);
}

/** 1234567 -> `1,234,567`, the same in every locale. */
function grouped(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
