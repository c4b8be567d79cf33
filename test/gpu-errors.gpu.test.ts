// GPU failures become KilnErrors that name the op and the user's source line; none pass silently.

import { afterAll, describe, expect, it } from 'vitest';
import { type Kernel, type Program, lowerGraph } from '../codegen/index.ts';
import { KilnError } from '../ir/errors.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { Executor, type Feed, getDevice, pipelineFor, readback, releaseDevice, runKernel, upload } from '../runtime/webgpu/index.ts';

afterAll(releaseDevice);

const at = (line: number) => ({ file: 'model.ts', line, col: 3 });

async function rejection(p: Promise<unknown>): Promise<KilnError> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(KilnError);
  return e as KilnError;
}

/** x + y on [4], the add written at model.ts:7. */
function addGraph(): { graph: Graph; program: Program } {
  const graph = new Graph();
  const x = graph.add('input', [], { name: 'x', dtype: 'f32', shape: [4] });
  const y = graph.add('input', [], { name: 'y', dtype: 'f32', shape: [4] });
  graph.setOutputs([{ name: 'z', node: graph.add('add', [x, y], {}, at(7)) }]);
  return { graph, program: lowerGraph(graph) };
}

describe('WebGPU errors', () => {
  it('a shader WebGPU rejects becomes E010 naming the node and its source line', async () => {
    const kdev = await getDevice();
    const { program } = addGraph();
    const good = program.kernels[0];
    // wgsl_reflect parses this; Dawn's type checker rejects it (u32 + f32).
    const code = good.code.replace('out[gid] =', 'out[gid] = 1u +');
    const broken: Kernel = { ...good, code, key: code };
    const e = await rejection(pipelineFor(kdev, broken));
    expect(e.code).toBe('KILN_E010');
    expect(e.message).toContain('model.ts:7:3');
    expect(e.message).toContain('%2 = add(%0, %1)');
    // Executor.create compiles every kernel, so a program holding it fails the same way.
    const e2 = await rejection(Executor.create(kdev, { ...program, kernels: [broken] }));
    expect(e2.code).toBe('KILN_E010');
    // The device is still usable afterwards.
    await kdev.errors.check();
  });

  it('a tensor larger than the GPU allows becomes E009 naming the tensor and its size', async () => {
    const kdev = await getDevice();
    const graph = new Graph();
    const n = 2 ** 20;
    const a = graph.add('input', [], { name: 'a', dtype: 'f32', shape: [n, 1] });
    const b = graph.add('input', [], { name: 'b', dtype: 'f32', shape: [1, n] });
    const outer = graph.add('matmul', [a, b], {}, at(12));
    graph.setOutputs([{ name: 'outer', node: outer }]);
    const e = await rejection(Executor.create(kdev, lowerGraph(graph)));
    expect(e.code).toBe('KILN_E009');
    expect(e.message).toContain('model.ts:12:3');
    expect(e.message).toContain('%2 = matmul');
    expect(e.message).toContain('4.0 TiB');
    await kdev.errors.check();
  });

  it('a bad buffer fed to a run surfaces as E010 at the next readback, naming the kernel', async () => {
    const kdev = await getDevice();
    const { graph, program } = addGraph();
    const exec = await Executor.create(kdev, program);
    const [x, y] = graph.nodes;
    // Not a STORAGE buffer: binding it is a validation error, reported asynchronously.
    const notStorage = kdev.device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST });
    const host = { type: x.type, data: new Float32Array([1, 2, 3, 4]) };
    const outs = exec.run(new Map<Node, Feed>([[x, host], [y, notStorage]]));
    const e = await rejection(readback(kdev, outs.get('z')!, graph.outputs[0].node.type));
    expect(e.code).toBe('KILN_E010');
    expect(e.message).toContain('%2 = add');
    expect(e.loc?.line).toBe(7);
    // Reported once: the device carries on.
    const ok = exec.run(new Map([[x, host], [y, host]]));
    expect([...(await readback(kdev, ok.get('z')!, x.type))]).toEqual([2, 4, 6, 8]);
    exec.destroy();
    notStorage.destroy();
  });

  it('in eager mode a rejected shader surfaces as E010 at the next readback', async () => {
    const kdev = await getDevice();
    const { graph, program } = addGraph();
    const good = program.kernels[0];
    const code = good.code.replace('out[gid] =', 'out[gid] = 2u +');
    const x = upload(kdev, { type: graph.nodes[0].type, data: new Float32Array([1, 2, 3, 4]) });
    const out = runKernel(kdev, { ...good, code, key: code }, [x, x]);
    const e = await rejection(readback(kdev, out, good.node.type));
    expect(e.code).toBe('KILN_E010');
    expect(e.message).toContain('%2 = add');
    // The good kernel still runs.
    expect([...(await readback(kdev, runKernel(kdev, good, [x, x]), good.node.type))]).toEqual([2, 4, 6, 8]);
  });

  it('a leaf without a value is E014 naming it', async () => {
    const kdev = await getDevice();
    const { graph, program } = addGraph();
    const exec = await Executor.create(kdev, program);
    const host = { type: graph.nodes[0].type, data: new Float32Array(4) };
    expect(() => exec.run(new Map([[graph.nodes[0], host]]))).toThrow(/KILN_E014.*input "y"/);
    exec.destroy();
  });
});
