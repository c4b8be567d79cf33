// Memory planning: values share buffers only when their lifetimes do not overlap.

import { describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { planBuffers } from '../codegen/memory.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';

function chain(): { g: Graph; nodes: Node[] } {
  const g = new Graph();
  const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [64] });
  const a = g.add('exp', [x]);
  const b = g.add('tanh', [a]);
  const c = g.add('add', [b, a]); // a is still read here: b must not take a's buffer
  const d = g.add('neg', [c]);
  const e = g.add('relu', [d]);
  g.setOutputs([{ name: 'e', node: e }, { name: 'c', node: c }]);
  return { g, nodes: [a, b, c, d, e] };
}

describe('memory planning', () => {
  it('reuses a buffer once its last reader has run, never while the value is still read', () => {
    const { g, nodes } = chain();
    const [a, b, c, d, e] = nodes;
    const plan = planBuffers(lowerGraph(g));
    const slot = (n: Node) => plan.slotOf.get(n)!;
    expect(slot(b)).not.toBe(slot(a)); // a is read again by c
    expect(slot(d)).toBe(slot(a)); // a and b are dead once c ran: d takes one of their buffers
    expect(new Set([slot(c), slot(e)]).size).toBe(2); // outputs keep buffers of their own
    expect([slot(a), slot(b), slot(d)]).not.toContain(slot(c));
    expect([slot(a), slot(b), slot(d)]).not.toContain(slot(e));
    expect(plan.slotBytes.length).toBeLessThan(nodes.length);
  });

  it('never gives two values live at the same kernel one buffer (property over random chains)', () => {
    for (let seed = 1; seed <= 50; seed++) {
      let s = seed;
      const rand = (n: number) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) % n);
      const g = new Graph();
      const vals: Node[] = [g.add('input', [], { name: 'x', dtype: 'f32', shape: [8 + rand(8)] })];
      for (let i = 0; i < 20; i++) {
        const a = vals[rand(vals.length)];
        const b = vals.filter((v) => v.type.shape[0] === a.type.shape[0])[0];
        vals.push(rand(2) ? g.add('add', [a, b]) : g.add('exp', [a]));
      }
      g.setOutputs([{ name: 'y', node: vals[vals.length - 1] }]);
      const program = lowerGraph(g);
      const plan = planBuffers(program);
      const born = new Map(program.kernels.map((k, i) => [k.node, i]));
      const last = new Map<Node, number>();
      program.kernels.forEach((k, i) => k.inputs.forEach((x) => last.set(x, i)));
      for (const o of g.outputs) last.set(o.node, Infinity);
      const computed = [...born.keys()];
      for (const p of computed) {
        for (const q of computed) {
          if (p === q || plan.slotOf.get(p) !== plan.slotOf.get(q)) continue;
          const [p0, p1] = [born.get(p)!, last.get(p) ?? born.get(p)!];
          const [q0, q1] = [born.get(q)!, last.get(q) ?? born.get(q)!];
          expect(p1 < q0 || q1 < p0, `%${p.id} [${p0},${p1}] and %${q.id} [${q0},${q1}] share a buffer`).toBe(true);
        }
      }
    }
  });
});
