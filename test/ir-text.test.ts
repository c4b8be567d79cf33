import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Graph, KilnError, type Node, type SourceLoc, compile, fromHost, interpret, parseGraph, printGraph, traceModule, verifyGraph } from '../index.ts';
import createModel, { type GPTConfig } from '../examples/nanogpt/model.ts';
import type { AttrValue, Attrs, Operand } from '../ir/graph.ts';
import { sameGraph } from '../ir/equal.ts';
import { isNode } from '../ir/graph.ts';
import { eliminateCommonSubexpressions } from '../passes/fold.ts';
import type { HostTensor } from '../ir/host.ts';
import { broadcastShapes, numel } from '../ir/types.ts';
import { loadFixture } from './helpers.ts';

/** A graph as plain data, operands by id, so two graphs compare with toEqual. */
function plain(g: Graph) {
  return {
    nodes: g.nodes.map((n) => ({ id: n.id, op: n.op, inputs: n.inputs.map((x) => (isNode(x) ? `%${x.id}` : x)), attrs: n.attrs, type: n.type, loc: n.loc })),
    outputs: g.outputs.map((o) => [o.name, o.node.id]),
  };
}

function parseError(text: string): KilnError {
  try {
    parseGraph(text);
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error(`expected a parse error for:\n${text}`);
}

describe('nanoGPT traces print and parse back to the same text', async () => {
  const fx = await loadFixture();
  const idx = fromHost(fx.expected.get('idx')!);
  const targets = fromHost(fx.expected.get('targets')!);
  const variants: [string, Partial<GPTConfig>, string][] = [
    ['manual attention (flash false)', { flash: false }, 'masked_fill'],
    ['sdpa isCausal (flash true)', { flash: true }, 'sdpa'],
    ['sdpa with an explicit mask (sdpa_mask)', { flash: true, sdpa_mask: true }, 'buffer'],
  ];
  for (const [label, override, expectedOp] of variants) {
    const model = createModel({ ...(fx.config as Partial<GPTConfig>), ...override }).eval();
    const { graph } = traceModule(model, [idx, targets]);
    const text = printGraph(graph);

    it(`${label}: print(parse(text)) is the text, byte for byte`, () => {
      expect(graph.nodesOf(expectedOp).length).toBeGreaterThan(0);
      expect(text).toContain('# examples/nanogpt/model.ts:');
      expect(printGraph(parseGraph(text))).toBe(text);
    });

    it(`${label}: the parsed graph equals the traced one node for node and verifies`, () => {
      const parsed = parseGraph(text);
      expect(plain(parsed)).toEqual(plain(graph));
      expect(() => verifyGraph(parsed, 'parse')).not.toThrow();
    });

    it(`${label}: every stage compile() goes through (canonical, fused, lowered) round-trips too`, async () => {
      const { passes } = await compile(model, { backend: 'cpu' }).lower(idx, targets);
      expect([...passes.stages.keys()]).toEqual(['traced', 'canonical', 'fused', 'lowered']);
      for (const stage of passes.stages.values()) {
        const staged = printGraph(stage);
        expect(printGraph(parseGraph(staged))).toBe(staged);
      }
    });

    it(`${label}: under autocast f16, every stage (f16 types, casts, pre_qk attention) round-trips and verifies`, async () => {
      const { passes } = await compile(model, { backend: 'cpu', autocast: 'f16' }).lower(idx, targets);
      const lowered = printGraph(passes.graph);
      expect(lowered).toMatch(/ : f16\[/);
      expect(lowered).toContain('cast(');
      for (const stage of passes.stages.values()) {
        const staged = printGraph(stage);
        const parsed = parseGraph(staged);
        expect(printGraph(parsed)).toBe(staged);
        expect(() => verifyGraph(parsed, 'parse')).not.toThrow();
      }
    });

    it(`${label}: the parsed graph computes the same logits and loss on the cpu interpreter`, () => {
      const state = model.stateDict();
      const feed = (node: Node): HostTensor => {
        const name = String(node.attrs.name);
        if (node.op === 'input') return (name === 'idx' ? idx : targets).host!;
        return state.get(name) ?? model.namedBuffers().find(([n]) => n === name)![1].host!;
      };
      const before = interpret(graph, feed);
      const after = interpret(parseGraph(text), feed);
      expect([...after.keys()]).toEqual(['logits', 'loss']);
      for (const name of ['logits', 'loss']) expect(after.get(name)!.data).toEqual(before.get(name)!.data);
    });
  }
});

// ---- random graphs ----

/** Literals the printer must not lose: infinities, negative zero, tiny and inexact values, NaN. */
const SPECIAL = [-Infinity, Infinity, -0, 0, 1e-30, 0.1, -0.1, 5e-324, 1.7976931348623157e308, 1e21, 1 / 3, NaN, -2];
const literal = fc.oneof(fc.constantFrom(...SPECIAL), fc.double(), fc.integer({ min: -1000, max: 1000 }));

type Step =
  | { kind: 'unary'; op: string; at: number }
  | { kind: 'scalar'; op: string; at: number; value: number; scalarFirst: boolean }
  | { kind: 'binary'; op: string; at: number; other: number }
  | { kind: 'reshape'; at: number; flatten: boolean }
  | { kind: 'matmul'; at: number; n: number; transposeB: boolean };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('unary' as const), op: fc.constantFrom('exp', 'neg', 'tanh', 'relu', 'gelu', 'sqrt'), at: fc.nat() }),
  fc.record({ kind: fc.constant('scalar' as const), op: fc.constantFrom('add', 'sub', 'mul', 'div', 'maximum', 'pow'), at: fc.nat(), value: literal, scalarFirst: fc.boolean() }),
  fc.record({ kind: fc.constant('binary' as const), op: fc.constantFrom('add', 'mul', 'sub', 'minimum'), at: fc.nat(), other: fc.nat() }),
  fc.record({ kind: fc.constant('reshape' as const), at: fc.nat(), flatten: fc.boolean() }),
  fc.record({ kind: fc.constant('matmul' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 4 }), transposeB: fc.boolean() }),
);

const loc = fc.option(
  fc.record({ file: fc.constantFrom('model.ts', 'examples/nanogpt/model.ts', 'C:/work/a b.ts'), line: fc.nat(9999), col: fc.integer({ min: 1, max: 200 }), text: fc.option(fc.constantFrom('att = q @ k.transpose(-2, -1)', 'x = "a  # b"', 'y = f(x)  # why'), { nil: undefined }) }),
  { nil: undefined },
);

const shape = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 });

/** Builds a valid graph through Graph.add (so every type is inferred), skipping steps that do not fit. */
function buildGraph(inputShapes: number[][], steps: Step[], locs: (SourceLoc | undefined)[]): Graph {
  const g = new Graph();
  const values: Node[] = inputShapes.map((s, i) => g.add('input', [], { name: `x${i}`, dtype: 'f32', shape: s }));
  steps.forEach((s, i) => {
    const x = values[s.at % values.length];
    const where = locs[i % Math.max(locs.length, 1)];
    let inputs: Operand[];
    let op: string;
    let attrs: Attrs = {};
    if (s.kind === 'unary') [op, inputs] = [s.op, [x]];
    else if (s.kind === 'scalar') [op, inputs] = [s.op, s.scalarFirst ? [s.value, x] : [x, s.value]];
    else if (s.kind === 'binary') {
      const y = values[s.other % values.length];
      if (!broadcastShapes(x.type.shape, y.type.shape)) return;
      [op, inputs] = [s.op, [x, y]];
    } else if (s.kind === 'reshape') {
      [op, inputs, attrs] = ['reshape', [x], { shape: s.flatten ? [numel(x.type.shape)] : [1, ...x.type.shape] }];
    } else {
      if (x.type.shape.length < 2) return;
      const k = x.type.shape[x.type.shape.length - 1];
      const w = g.add('param', [], { name: `w${i}`, dtype: 'f32', shape: s.transposeB ? [s.n, k] : [k, s.n] });
      [op, inputs, attrs] = ['matmul', [x, w], { transposeA: false, transposeB: s.transposeB }];
    }
    values.push(g.add(op, inputs, attrs, where));
  });
  g.setOutputs([{ name: 'out', node: values[values.length - 1] }, { name: 'first', node: values[0] }]);
  return g;
}

describe('random graphs round-trip through the text form', () => {
  it('prints, parses and prints again to the same text, keeping every literal bit for bit', () => {
    fc.assert(
      fc.property(fc.array(shape, { minLength: 1, maxLength: 3 }), fc.array(step, { maxLength: 12 }), fc.array(loc, { maxLength: 4 }), (shapes, steps, locs) => {
        const g = buildGraph(shapes, steps, locs);
        const text = printGraph(g);
        const parsed = parseGraph(text);
        expect(printGraph(parsed)).toBe(text);
        verifyGraph(parsed, 'parse');
        g.nodes.forEach((n, i) => {
          n.inputs.forEach((x, j) => {
            const y = parsed.nodes[i].inputs[j];
            if (isNode(x)) expect(isNode(y) && y.id).toBe(x.id);
            else expect(Object.is(y, x)).toBe(true);
          });
          expect(parsed.nodes[i].loc).toEqual(n.loc);
        });
      }),
      { numRuns: 300 },
    );
  });

  it('keeps negative zero negative and NaN NaN as literals', () => {
    const g = parseGraph('%0 = input() {name="x"} : f32[2]\n%1 = mul(%0, -0) : f32[2]\n%2 = add(%1, nan) : f32[2]\noutput y=%2\n');
    expect(Object.is(g.nodes[1].inputs[1], -0)).toBe(true);
    expect(Number.isNaN(g.nodes[2].inputs[1])).toBe(true);
  });
});

// ---- attributes ----

/** Any UTF-16 string, lone surrogates included, plus the characters the text form treats specially. */
const anyString = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)) }),
  fc.string({ unit: fc.constantFrom('"', '\\', '  # ', '#', '\n', '\r', '\t', '\u2028', '%', '}', ',', '=', ' ', 'a') }),
);
const attrValue: fc.Arbitrary<AttrValue> = fc.oneof(
  anyString,
  literal,
  fc.boolean(),
  fc.constant(null),
  fc.array(literal, { maxLength: 5 }),
);

function graphWithAttrs(attrs: Attrs): Graph {
  const g = new Graph();
  const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [2] });
  const y = g.addRaw({ id: 1, op: 'exp', inputs: [x], attrs, type: { dtype: 'f32', shape: [2] }, loc: { file: 'm.ts', line: 3, col: 9, text: 'y = x.exp()' } });
  g.setOutputs([{ name: 'y', node: y }]);
  return g;
}

describe('attribute values of every kind round-trip', () => {
  it('keeps strings (quotes, escapes, "  # ", newlines, lone surrogates), numbers, lists, null and bools', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.stringMatching(/^[A-Za-z_]\w{0,6}$/), attrValue, { maxKeys: 5 }), (attrs) => {
        const text = printGraph(graphWithAttrs(attrs));
        const parsed = parseGraph(text);
        expect(printGraph(parsed)).toBe(text);
        const back = parsed.nodes[1].attrs;
        expect(Object.keys(back)).toEqual(Object.keys(attrs));
        for (const [k, v] of Object.entries(attrs)) {
          if (Array.isArray(v)) v.forEach((item, i) => expect(Object.is((back[k] as number[])[i], item)).toBe(true));
          else expect(Object.is(back[k], v)).toBe(true);
        }
        expect(parsed.nodes[1].loc).toEqual({ file: 'm.ts', line: 3, col: 9, text: 'y = x.exp()' });
      }),
      { numRuns: 300 },
    );
  });

  it('reads each attribute kind back with its JavaScript type', () => {
    const attrs = { s: 'say "hi"\\n  # not a comment', n: -1.5e-7, inf: -Infinity, list: [1, -0, 2.5], empty: [], none: null, yes: true, no: false };
    const parsed = parseGraph(printGraph(graphWithAttrs(attrs)));
    expect(parsed.nodes[1].attrs).toEqual(attrs);
    expect(parsed.nodes[1].loc?.text).toBe('y = x.exp()');
  });

  it('shows a leaf’s dtype and shape once, in its type, and restores them as attributes when parsing', () => {
    const text = '%0 = input() {name="idx"} : i32[2,24]\noutput idx=%0\n';
    const parsed = parseGraph(text);
    expect(parsed.nodes[0].attrs).toEqual({ name: 'idx', dtype: 'i32', shape: [2, 24] });
    expect(printGraph(parsed)).toBe(text);
  });

  it('parses outputs named by array position, as forward() returning an array gives', () => {
    const text = '%0 = input() {name="x"} : f32[2]\n%1 = exp(%0) : f32[2]\noutput 0=%1, 1=%0\n';
    const parsed = parseGraph(text);
    expect(parsed.outputs.map((o) => [o.name, o.node.id])).toEqual([['0', 1], ['1', 0]]);
    expect(printGraph(parsed)).toBe(text);
  });
});

// ---- meta ----

describe('meta prints after the type and parses back, apart from the attributes', () => {
  const text = [
    '%0 = input() {name="q"} : f32[1,4,2]',
    '%1 = fused_attention(%0, %0, %0) {causal=true, scale=0.5, scaling="post"} : f32[1,4,2] meta{kernel="flash_causal", rule="sdpa", reason="mask %3 proved lower-triangular over [4,4]; p=0.5"}  # m.ts:9:3  y = sdpa(q, q, q)',
    'output y=%1',
    '',
  ].join('\n');

  it('keeps meta and attrs each in their own group, and the text byte for byte', () => {
    const node = parseGraph(text).nodes[1];
    expect(node.attrs).toEqual({ causal: true, scale: 0.5, scaling: 'post' });
    expect(node.meta).toEqual({ kernel: 'flash_causal', rule: 'sdpa', reason: 'mask %3 proved lower-triangular over [4,4]; p=0.5' });
    expect(node.loc).toEqual({ file: 'm.ts', line: 9, col: 3, text: 'y = sdpa(q, q, q)' });
    expect(printGraph(parseGraph(text))).toBe(text);
  });

  it('leaves meta out of graph equality: graphs that differ only in meta and ids are the same graph', () => {
    const other = text.replace('rule="sdpa"', 'rule="attention_chain"').replace(/%1/g, '%7').replace('  # m.ts:9:3  y = sdpa(q, q, q)', '');
    expect(sameGraph(parseGraph(text), parseGraph(other))).toBe(true);
    expect(sameGraph(parseGraph(text), parseGraph(text.replace('scale=0.5', 'scale=0.25')))).toBe(false);
  });

  it('merges nodes that differ only in meta when eliminating common subexpressions', () => {
    const twins = text.replace('output y=%1', '%2 = fused_attention(%0, %0, %0) {causal=true, scale=0.5, scaling="post"} : f32[1,4,2] meta{kernel="flash_causal", rule="attention_chain"}\n%3 = add(%1, %2) : f32[1,4,2]\noutput y=%3');
    const merged = eliminateCommonSubexpressions(parseGraph(twins));
    expect(merged.nodesOf('fused_attention').map((n) => n.id)).toEqual([1]);
  });
});

// ---- source locations ----

describe('the source-line comment survives parsing', () => {
  it('keeps file:line:col and the source text', () => {
    const text = '%0 = input() {name="q"} : f32[2,2]\n%1 = matmul(%0, %0) {transposeA=false, transposeB=true} : f32[2,2]  # model.ts:58:15  att = q @ k.transpose(-2, -1)\noutput att=%1\n';
    const node = parseGraph(text).nodes[1];
    expect(node.loc).toEqual({ file: 'model.ts', line: 58, col: 15, text: 'att = q @ k.transpose(-2, -1)' });
    expect(node.attrs).toEqual({ transposeA: false, transposeB: true });
  });

  it('keeps a location without text, and text that itself contains "  # " and quotes', () => {
    const text = [
      '%0 = input() {name="x"} : f32[2]',
      '%1 = exp(%0) : f32[2]  # examples/nanogpt/model.ts:124:19',
      '%2 = neg(%1) {note="a  # b"} : f32[2]  # C:/src/a b.ts:7:3  y = f("  # ")  # trailing',
      'output y=%2',
      '',
    ].join('\n');
    const parsed = parseGraph(text);
    expect(parsed.nodes[1].loc).toEqual({ file: 'examples/nanogpt/model.ts', line: 124, col: 19 });
    expect(parsed.nodes[2].attrs).toEqual({ note: 'a  # b' });
    expect(parsed.nodes[2].loc).toEqual({ file: 'C:/src/a b.ts', line: 7, col: 3, text: 'y = f("  # ")  # trailing' });
    expect(printGraph(parsed)).toBe(text);
  });
});

// ---- parse errors ----

describe('bad IR text is refused with KILN_E013 naming the line', () => {
  const ok = '%0 = input() {name="x"} : f32[2]';
  const cases: [string, string, number, string][] = [
    ['a missing "="', `${ok}\n%1 exp(%0) : f32[2]\noutput y=%1`, 2, 'expected "="'],
    ['an unknown dtype', `${ok}\n%1 = exp(%0) : bf16[2]\noutput y=%1`, 2, 'dtype'],
    ['a value used before it is defined', `${ok}\n%1 = add(%0, %2) : f32[2]\noutput y=%1`, 2, '%2 is not'],
    ['an id defined twice', `${ok}\n%1 = exp(%0) : f32[2]\n%1 = neg(%0) : f32[2]\noutput y=%1`, 3, 'defined twice'],
    ['text after the type', `${ok}\n%1 = exp(%0) : f32[2] extra\noutput y=%1`, 2, 'the end of the line'],
    ['a bad number literal', `${ok}\n%1 = mul(%0, two) : f32[2]\noutput y=%1`, 2, 'a number'],
    ['an unterminated string', `%0 = input() {name="x} : f32[2]\noutput y=%0`, 1, 'a string'],
    ['an output of an undefined value', `${ok}\noutput y=%7`, 2, '%7 is not'],
    ['a missing type', `${ok}\n%1 = exp(%0)\noutput y=%1`, 2, 'expected ":"'],
  ];
  for (const [what, text, line, fragment] of cases) {
    it(`refuses ${what} at line ${line}`, () => {
      const e = parseError(text);
      expect(e.code).toBe('KILN_E013');
      expect(e.message).toContain(`IR text line ${line},`);
      expect(e.message).toContain(fragment);
      expect(e.message.split('\n')).toHaveLength(1);
    });
  }

  it('refuses text with no output line', () => {
    const e = parseError(`${ok}\n%1 = exp(%0) : f32[2]\n`);
    expect(e.code).toBe('KILN_E013');
    expect(e.message).toContain('no output line');
  });

  it('refuses an op name the registry does not know with KILN_E004', () => {
    const e = parseError(`${ok}\n%1 = frobnicate(%0) : f32[2]\noutput y=%1`);
    expect(e.code).toBe('KILN_E004');
    expect(e.message).toContain('"frobnicate"');
  });
});
