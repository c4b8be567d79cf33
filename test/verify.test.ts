import { describe, expect, it } from 'vitest';
import { Graph, KilnError, type Node, parseGraph, verifyGraph } from '../index.ts';
import type { TensorType } from '../ir/types.ts';

const f32 = (...shape: number[]): TensorType => ({ dtype: 'f32', shape });

/** input x : f32[2,3] as node 0. */
function withInput(): { g: Graph; x: Node } {
  const g = new Graph();
  return { g, x: g.add('input', [], { name: 'x', dtype: 'f32', shape: [2, 3] }) };
}

function verifyError(g: Graph): KilnError {
  try {
    verifyGraph(g, 'test');
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error('expected verifyGraph to throw');
}

/** Asserts an E012 one-liner that names the stage and says what is wrong. */
function expectRejected(g: Graph, fragment: string): KilnError {
  const e = verifyError(g);
  expect(e.code).toBe('KILN_E012');
  expect(e.message).toContain('IR invalid after test');
  expect(e.message).toContain(fragment);
  expect(e.message.split('\n')).toHaveLength(1);
  return e;
}

describe('the verifier accepts what the tracer and parser build', () => {
  it('accepts a well-formed graph', () => {
    const { g, x } = withInput();
    const y = g.add('exp', [x]);
    g.setOutputs([{ name: 'y', node: y }]);
    expect(() => verifyGraph(g)).not.toThrow();
  });
});

describe('the verifier rejects malformed graphs with KILN_E012', () => {
  it('rejects a value used before its definition', () => {
    const { g, x } = withInput();
    const later: Node = { id: 2, op: 'exp', inputs: [x], attrs: {}, type: f32(2, 3) };
    const early = g.addRaw({ id: 1, op: 'neg', inputs: [later], attrs: {}, type: f32(2, 3) });
    g.addRaw(later);
    g.setOutputs([{ name: 'y', node: early }]);
    expectRejected(g, 'input %2 is not defined before its use');
  });

  it('rejects a node that reads itself (a cycle)', () => {
    const { g, x } = withInput();
    const self = { id: 1, op: 'add', inputs: [x] as Node[], attrs: {}, type: f32(2, 3) };
    self.inputs.push(self);
    g.addRaw(self);
    g.setOutputs([{ name: 'y', node: self }]);
    expectRejected(g, 'input %1 is not defined before its use');
  });

  it('rejects an id defined twice', () => {
    const { g, x } = withInput();
    g.addRaw({ id: 1, op: 'exp', inputs: [x], attrs: {}, type: f32(2, 3) });
    const dup = g.addRaw({ id: 1, op: 'neg', inputs: [x], attrs: {}, type: f32(2, 3) });
    g.setOutputs([{ name: 'y', node: dup }]);
    expectRejected(g, 'value %1 is defined twice');
  });

  it('rejects a recorded shape the op does not give, quoting the node', () => {
    const { g, x } = withInput();
    const y = g.addRaw({ id: 1, op: 'exp', inputs: [x], attrs: {}, type: f32(3, 2), loc: { file: 'model.ts', line: 12, col: 5 } });
    g.setOutputs([{ name: 'y', node: y }]);
    const e = expectRejected(g, 'recorded type f32[3,2] but the op gives f32[2,3]');
    expect(e.message).toContain('%1 = exp(%0) : f32[3,2]');
    expect(e.loc).toEqual({ file: 'model.ts', line: 12, col: 5 });
    expect(e.message).toContain('model.ts:12:5');
  });

  it('rejects a recorded dtype the op does not give', () => {
    const { g, x } = withInput();
    const y = g.addRaw({ id: 1, op: 'exp', inputs: [x], attrs: {}, type: { dtype: 'i32', shape: [2, 3] } });
    g.setOutputs([{ name: 'y', node: y }]);
    expectRejected(g, 'recorded type i32[2,3] but the op gives f32[2,3]');
  });

  it('rejects a node whose inputs the op’s type rule refuses, with the rule’s reason', () => {
    const g = parseGraph('%0 = input() {name="a"} : f32[2,3]\n%1 = input() {name="b"} : f32[4]\n%2 = add(%0, %1) : f32[2,3]\noutput y=%2\n');
    expectRejected(g, 'add cannot broadcast f32[2,3] and f32[4]');
  });

  it('rejects a node with more operands than its op declares, naming them', () => {
    const g = parseGraph('%0 = input() {name="q"} : f32[2,4,3]\n%1 = attention_lse(%0, %0, %0, %0) {causal=false, scale=1} : f32[2,4,2]\noutput y=%1\n');
    expectRejected(g, 'attention_lse takes q, k, mask? (2 to 3 operands), got 4');
  });

  it('rejects an unknown op with KILN_E004', () => {
    const { g, x } = withInput();
    const y = g.addRaw({ id: 1, op: 'frobnicate', inputs: [x], attrs: {}, type: f32(2, 3), loc: { file: 'model.ts', line: 3, col: 1 } });
    g.setOutputs([{ name: 'y', node: y }]);
    const e = verifyError(g);
    expect(e.code).toBe('KILN_E004');
    expect(e.message).toContain('unknown op "frobnicate"');
    expect(e.message).toContain('model.ts:3:1');
  });

  it('rejects a graph with no outputs', () => {
    const { g, x } = withInput();
    g.add('exp', [x]);
    expectRejected(g, 'the graph has no outputs');
  });

  it('rejects an output that reads a node outside the graph', () => {
    const { g, x } = withInput();
    const stray: Node = { id: 9, op: 'exp', inputs: [x], attrs: {}, type: f32(2, 3) };
    g.setOutputs([{ name: 'y', node: stray }]);
    expectRejected(g, 'output y reads %9, which is not in the graph');
  });

  it('rejects two outputs with one name', () => {
    const { g, x } = withInput();
    const y = g.add('exp', [x]);
    g.setOutputs([{ name: 'y', node: y }, { name: 'y', node: x }]);
    expectRejected(g, 'output name y is used twice');
  });

  it('rejects a parameter name that appears twice', () => {
    const g = parseGraph('%0 = param() {name="w"} : f32[2]\n%1 = param() {name="w"} : f32[2]\n%2 = add(%0, %1) : f32[2]\noutput y=%2\n');
    expectRejected(g, 'param "w" appears twice');
  });

  it('rejects two inputs with one name', () => {
    const g = parseGraph('%0 = input() {name="x"} : f32[2]\n%1 = input() {name="x"} : f32[2]\n%2 = add(%0, %1) : f32[2]\noutput y=%2\n');
    expectRejected(g, 'input "x" appears twice');
  });

  it('rejects an input leaf whose name is not a string', () => {
    const g = parseGraph('%0 = input() {name=3} : f32[2]\noutput y=%0\n');
    expectRejected(g, 'input needs a name attribute');
  });

  it('rejects an input leaf whose shape attribute disagrees with its type', () => {
    const { g } = withInput();
    const bad = g.addRaw({ id: 1, op: 'input', inputs: [], attrs: { name: 'y', dtype: 'f32', shape: [2, -1] }, type: f32(2, 1) });
    g.setOutputs([{ name: 'y', node: bad }]);
    expectRejected(g, 'input needs a shape attribute of non-negative integers, got [2,-1]');
  });

  it('rejects an input leaf given operands', () => {
    const { g, x } = withInput();
    const bad = g.addRaw({ id: 1, op: 'input', inputs: [x], attrs: { name: 'y', dtype: 'f32', shape: [2, 3] }, type: f32(2, 3) });
    g.setOutputs([{ name: 'y', node: bad }]);
    expectRejected(g, 'input takes no inputs');
  });
});
