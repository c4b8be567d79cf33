// Graphs of a matmul and the elementwise chain after it, unfused, and a runner on the device, for the epilogue tests (CPU:
// matmul-epilogue.test.ts; GPU: matmul-epilogue.gpu.test.ts, matmul-epilogue-f16.gpu.test.ts).

import { lowerGraph } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { roundF16 } from '../ir/f16.ts';
import '../ir/ops/index.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { Executor, getDevice, readback } from '../runtime/webgpu/index.ts';
import { rng } from './helpers.ts';

export interface EpilogueCase {
  readonly name: string;
  readonly graph: Graph;
  readonly feeds: Map<Node, HostTensor>;
  /** The chain the fused node should hold. */
  readonly expr: string;
}

/** Random values in [-1, 1), f16 ones exactly representable. */
function values(dtype: DType, shape: Shape, seed: number): HostTensor {
  const r = rng(seed);
  const round = dtype === 'f16' ? roundF16 : Math.fround;
  return { type: { dtype, shape: [...shape] }, data: Float32Array.from({ length: numel(shape) }, () => round(r() * 2 - 1)) };
}

/**
 * x [..., M, K] @ W^T (W [N, K], nn.Linear's layout), then `chain` over the product and leaves made by
 * `leaf`. M, N, K are ragged for every tiling (not multiples of 4, 8, 16 or 64) unless given.
 */
export function epilogueCase(
  name: string,
  dtype: DType,
  lead: Shape,
  [m, k, n]: [number, number, number],
  chain: (g: Graph, product: Node, leaf: (name: string, dtype: DType, shape: Shape) => Node) => Node,
  expr: string,
): EpilogueCase {
  const graph = new Graph();
  const feeds = new Map<Node, HostTensor>();
  let seed = 1;
  const leaf = (leafName: string, leafDType: DType, shape: Shape) => {
    const node = graph.add('input', [], { name: leafName, dtype: leafDType, shape: [...shape] });
    feeds.set(node, values(leafDType, shape, seed++));
    return node;
  };
  const x = leaf('x', dtype, [...lead, m, k]);
  const w = leaf('w', dtype, [n, k]);
  const product = graph.add('matmul', [x, w], { transposeA: false, transposeB: true });
  graph.setOutputs([{ name: 'y', node: chain(graph, product, leaf) }]);
  return { name, graph, feeds, expr };
}

const MKN: [number, number, number] = [37, 29, 70]; // ragged in M, K and N for every SIMT tiling

/** The chains nanoGPT's blocks put after a matmul, in f32 and as autocast writes them (f16 products, casts around an f32 chain). */
export function epilogueCases(dtype: 'f32' | 'f16'): EpilogueCase[] {
  const up = (g: Graph, x: Node) => (dtype === 'f16' ? g.add('cast', [x], { dtype: 'f32' }) : x);
  const down = (g: Graph, x: Node) => (dtype === 'f16' ? g.add('cast', [x], { dtype: 'f16' }) : x);
  const f = (s: string) => (dtype === 'f16' ? `f16(${s.replace('$0', 'f32($0)')})` : s);
  return [
    epilogueCase('bias [N]', dtype, [2], MKN, (g, p, leaf) => g.add('add', [p, leaf('bias', dtype, [MKN[2]])]), 'add($0, $1)'),
    epilogueCase('bias and GELU (c_fc)', dtype, [2], MKN, (g, p, leaf) => down(g, g.add('gelu', [g.add('add', [up(g, p), leaf('bias', 'f32', [MKN[2]])])])), f('gelu(add($0, $1))')),
    epilogueCase('bias and residual (c_proj)', dtype, [2], MKN, (g, p, leaf) => {
      const bias = leaf('bias', 'f32', [MKN[2]]);
      const residual = leaf('residual', 'f32', [2, MKN[0], MKN[2]]);
      return g.add('add', [residual, g.add('add', [up(g, p), bias])]);
    }, dtype === 'f16' ? 'add($1, add(f32($0), $2))' : 'add($1, add($0, $2))'), // $1 the residual, read first
    epilogueCase('scalar and broadcast operands: a column [M, 1], a batch-broadcast [1, M, N], a literal', dtype, [3], MKN, (g, p, leaf) => {
      const column = leaf('column', 'f32', [MKN[0], 1]);
      const plane = leaf('plane', 'f32', [1, MKN[0], MKN[2]]);
      return down(g, g.add('mul', [g.add('sub', [g.add('mul', [up(g, p), 0.125]), column]), plane]));
    }, f('mul(sub(mul($0, 0.125), $1), $2)')),
    // An inner cast down rounds to f16 in the middle of the chain (kiln_round_f16 in the kernel), as the unfused cast would.
    epilogueCase('an inner cast to f16 and back', dtype, [], [65, 40, 33], (g, p, leaf) => {
      const inner = g.add('cast', [g.add('add', [up(g, p), leaf('bias', 'f32', [33])])], { dtype: 'f16' });
      return g.add('tanh', [g.add('cast', [inner], { dtype: 'f32' })]);
    }, dtype === 'f16' ? 'tanh(f32(f16(add(f32($0), $1))))' : 'tanh(f32(f16(add($0, $1))))'),
    // Tiles that divide M, N and K (no bounds checks in the SIMT kernel; f16 on a device with subgroup matrices: the tensor-core kernel's write8).
    epilogueCase('tile-aligned c_fc: bias and GELU, batched', dtype, [2], [128, 64, 128], (g, p, leaf) => down(g, g.add('gelu', [g.add('add', [up(g, p), leaf('bias', 'f32', [128])])])), f('gelu(add($0, $1))')),
  ];
}

/** Runs `g` (its leaves fed by name from `feeds`) on the device; its output y. */
export async function runOnDevice(g: Graph, feeds: Map<Node, HostTensor>): Promise<Float32Array> {
  const kdev = await getDevice();
  const byName = new Map([...feeds].map(([n, t]) => [n.attrs.name, t]));
  const exec = await Executor.create(kdev, lowerGraph(g, kdev.limits));
  const out = exec.run(new Map(g.nodes.filter((n) => n.op === 'input').map((n) => [n, byName.get(n.attrs.name)!])));
  const y = g.outputs[0].node;
  const got = Float32Array.from(await readback(kdev, out.get('y')!, y.type));
  exec.destroy();
  return got;
}
