import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { F, KilnError, Module, type Tensor, nn, tensor, traceModule } from '../index.ts';
import { thrown } from './helpers.ts';
import createModel from '../examples/nanogpt/model.ts';

// Expected source lines are found by marker comments in this file, so editing the file above a
// marker cannot make a test pass or fail by accident.
const THIS_FILE = fileURLToPath(import.meta.url);
const SOURCE = readFileSync(THIS_FILE, 'utf8').split('\n');

function lineOf(marker: string): number {
  const hits = SOURCE.flatMap((text, i) => (text.includes(`// <${marker}>`) ? [i + 1] : []));
  if (hits.length !== 1) throw new Error(`marker <${marker}> found ${hits.length} times`);
  return hits[0];
}

/** Asserts the error is pinned to this test file at the marked line, and says so in its message. */
function expectAtMarker(e: KilnError, marker: string): void {
  const line = lineOf(marker);
  expect(e.loc?.file.endsWith('test/tracer.test.ts')).toBe(true);
  expect(e.loc?.line).toBe(line);
  expect(e.message).toContain(`tracer.test.ts:${line}:`);
  expect(e.message.split('\n')).toHaveLength(1);
}

const fn = <A extends unknown[], R>(forward: (...args: A) => R) => Object.assign(new Module(), { forward });

describe('the tracer records what forward() does', () => {
  it('records one node per op, each carrying the source line that called it', () => {
    const model = fn((x: Tensor) => {
      const y = x.exp(); // <exp>
      const z = F.mul(y, 0.5); // <mul>
      return z.sum(-1); // <sum>
    });
    const { graph } = traceModule(model, [tensor([1, 2, 3, 4, 5, 6], [2, 3])]);
    expect(graph.nodes.map((n) => n.op)).toEqual(['input', 'exp', 'mul', 'sum']);
    const [, exp, mul, sum] = graph.nodes;
    for (const [node, marker] of [[exp, 'exp'], [mul, 'mul'], [sum, 'sum']] as const) {
      expect(node.loc?.file.endsWith('test/tracer.test.ts')).toBe(true);
      expect(node.loc?.line).toBe(lineOf(marker));
      expect(node.loc?.text).toContain(`// <${marker}>`);
    }
  });

  it('names input leaves after forward()’s parameters and keeps non-tensor arguments out of the graph', () => {
    const model = fn((idx: Tensor, scale: number) => idx.mul(scale));
    const { graph, argNames } = traceModule(model, [tensor([1, 2]), 3]);
    expect(argNames).toEqual(['idx', 'scale']);
    expect(graph.nodesOf('input').map((n) => n.attrs.name)).toEqual(['idx']);
    expect(graph.nodes[1].inputs[1]).toBe(3);
  });

  it('turns parameters and buffers into param/buffer leaves named by their state-dict keys', () => {
    const model = createModel({ block_size: 8, vocab_size: 11, n_layer: 2, n_head: 2, n_embd: 8, dropout: 0, bias: true, flash: false });
    const idx = tensor([1, 2, 3, 4], [1, 4], 'i32');
    const { graph } = traceModule(model, [idx]);
    const params = graph.nodesOf('param').map((n) => String(n.attrs.name));
    const buffers = graph.nodesOf('buffer').map((n) => String(n.attrs.name));
    expect(new Set(params)).toEqual(new Set(model.namedParameters().map(([name]) => name)));
    expect(buffers).toEqual(['transformer.h.0.attn.bias', 'transformer.h.1.attn.bias']);
    expect(graph.nodesOf('param').find((n) => n.attrs.name === 'transformer.h.1.mlp.c_fc.weight')?.type).toEqual({ dtype: 'f32', shape: [32, 8] });
  });

  it('records a tied weight once, under its first name, and feeds both of its uses from that leaf', () => {
    const model = createModel({ block_size: 8, vocab_size: 11, n_layer: 1, n_head: 2, n_embd: 8, dropout: 0, bias: true, flash: true });
    const { graph } = traceModule(model, [tensor([1, 2, 3], [1, 3], 'i32'), tensor([2, 3, 4], [1, 3], 'i32')]);
    const params = graph.nodesOf('param').map((n) => n.attrs.name);
    expect(params.filter((name) => name === 'transformer.wte.weight')).toHaveLength(1);
    expect(params).not.toContain('lm_head.weight');
    const wte = graph.nodesOf('param').find((n) => n.attrs.name === 'transformer.wte.weight')!;
    const readers = graph.users().get(wte)!.map((n) => n.op);
    expect(readers).toEqual(['embedding', 'matmul']);
  });
});

describe('reading a value while tracing is refused with KILN_E003 at the user’s line', () => {
  it('refuses await t.item() in forward()', () => {
    const model = fn(async (x: Tensor) => {
      const v = await x.sum().item(); // <item>
      return v > 0 ? x.exp() : x;
    });
    const e = thrown(() => traceModule(model, [tensor([1, -2])]));
    expect(e.code).toBe('KILN_E003');
    expect(e.message).toContain('item()');
    expectAtMarker(e, 'item');
  });

  it('refuses await t.data() in forward()', () => {
    const model = fn(async (x: Tensor) => {
      const d = await x.data(); // <data>
      return x.mul(d[0]);
    });
    const e = thrown(() => traceModule(model, [tensor([1, -2])]));
    expect(e.code).toBe('KILN_E003');
    expect(e.message).toContain('data()');
    expectAtMarker(e, 'data');
  });

  it('refuses a tensor in an if condition (Symbol.toPrimitive)', () => {
    const model = fn((x: Tensor) => {
      // @ts-expect-error comparing a tensor to a number is exactly the mistake under test
      if (x.sum() > 0) return x.exp(); // <if>
      return x;
    });
    const e = thrown(() => traceModule(model, [tensor([1, -2])]));
    expect(e.code).toBe('KILN_E003');
    expectAtMarker(e, 'if');
  });

  it('refuses a read even when forward() swallows the rejection', () => {
    const model = fn((x: Tensor) => {
      x.item().catch(() => undefined); // <swallowed>
      return x.exp();
    });
    const e = thrown(() => traceModule(model, [tensor([1])]));
    expect(e.code).toBe('KILN_E003');
    expectAtMarker(e, 'swallowed');
  });

  it('reads values freely outside a trace (eager mode)', async () => {
    expect(await tensor([1, 2, 3]).sum().item()).toBe(6);
  });
});

describe('shape and dtype errors name the user’s line', () => {
  const matmul = (a: Tensor, b: Tensor) => a.matmul(b); // <matmul>
  const add = (a: Tensor, b: Tensor) => a.add(b); // <add>
  const a23 = () => tensor([1, 2, 3, 4, 5, 6], [2, 3]);

  it('rejects matmul [2,3] @ [4,5] with KILN_E001 when tracing', () => {
    const e = thrown(() => traceModule(fn(matmul), [a23(), tensor(new Array(20).fill(1), [4, 5])]));
    expect(e.code).toBe('KILN_E001');
    expect(e.message).toContain('f32[2,3] @ f32[4,5]');
    expectAtMarker(e, 'matmul');
  });

  it('rejects matmul [2,3] @ [4,5] with KILN_E001 in eager mode', () => {
    const e = thrown(() => matmul(a23(), tensor(new Array(20).fill(1), [4, 5])));
    expect(e.code).toBe('KILN_E001');
    expectAtMarker(e, 'matmul');
  });

  it('rejects add [2,3] + [4] with KILN_E001 when tracing', () => {
    const e = thrown(() => traceModule(fn(add), [a23(), tensor([1, 2, 3, 4])]));
    expect(e.code).toBe('KILN_E001');
    expect(e.message).toContain('cannot broadcast f32[2,3] and f32[4]');
    expectAtMarker(e, 'add');
  });

  it('rejects add [2,3] + [4] with KILN_E001 in eager mode', () => {
    const e = thrown(() => add(a23(), tensor([1, 2, 3, 4])));
    expect(e.code).toBe('KILN_E001');
    expectAtMarker(e, 'add');
  });

  it('rejects add f32 + i32 with KILN_E002 when tracing and in eager mode', () => {
    const ints = () => tensor([1, 2, 3], [3], 'i32');
    const traced = thrown(() => traceModule(fn(add), [a23(), ints()]));
    const eager = thrown(() => add(a23(), ints()));
    for (const e of [traced, eager]) {
      expect(e.code).toBe('KILN_E002');
      expect(e.message).toContain('f32 and i32');
      expectAtMarker(e, 'add');
    }
  });
});

describe('tensors forward() may not use', () => {
  it('rejects a tensor captured from outside forward() that is not a parameter or buffer, naming the line', () => {
    const outside = tensor([10, 20]);
    const e = thrown(() => traceModule(fn((x: Tensor) => x.add(outside)), [tensor([1, 2])])); // <captured>
    expect(e.code).toBe('KILN_E011');
    expect(e.message).toContain('neither an input nor a parameter or buffer');
    expect(e.message).toContain('registerBuffer');
    expectAtMarker(e, 'captured');
  });

  it('accepts the same tensor once it is registered as a buffer', () => {
    class Shift extends Module {
      declare offset: Tensor;
      constructor() {
        super();
        this.registerBuffer('offset', tensor([10, 20]));
      }
      forward(x: Tensor): Tensor {
        return x.add(this.offset);
      }
    }
    const { graph } = traceModule(new Shift(), [tensor([1, 2])]);
    expect(graph.nodesOf('buffer').map((n) => n.attrs.name)).toEqual(['offset']);
  });

  it('rejects a tensor kept from an earlier trace', () => {
    let kept: Tensor | undefined;
    const model = fn((x: Tensor) => {
      const y = kept ? x.add(kept) : x.exp();
      kept = y;
      return y;
    });
    traceModule(model, [tensor([1, 2])]);
    const e = thrown(() => traceModule(model, [tensor([1, 2])]));
    expect(e.code).toBe('KILN_E011');
    expect(e.message).toContain('another trace');
  });

  it('rejects a forward() that returns no tensor', () => {
    const e = thrown(() => traceModule(fn((x: Tensor) => x.size(0)), [tensor([1, 2])]));
    expect(e.code).toBe('KILN_E011');
    expect(e.message).toContain('returned no tensors');
  });

  it('rejects an async forward() that reads nothing, since tracing is synchronous', () => {
    const e = thrown(() => traceModule(fn(async (x: Tensor) => x.exp()), [tensor([1, 2])]));
    expect(e.code).toBe('KILN_E011');
    expect(e.message).toContain('returned a Promise');
  });
});

describe('layers record the caller’s line, not kiln’s', () => {
  it('pins nn.Linear’s matmul to the line that called forward()', () => {
    class Head extends Module {
      proj = new nn.Linear(3, 2);
      forward(x: Tensor): Tensor {
        return this.proj.forward(x); // <linear>
      }
    }
    const { graph } = traceModule(new Head(), [tensor([1, 2, 3], [1, 3])]);
    expect(graph.nodes.map((n) => n.op)).toEqual(['input', 'param', 'matmul', 'param', 'add']);
    for (const node of graph.nodes.filter((n) => !['input', 'param'].includes(n.op))) {
      expect(node.loc?.line).toBe(lineOf('linear'));
    }
  });
});
