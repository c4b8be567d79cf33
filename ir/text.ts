// The IR's one text form: what `kiln dump` shows, what snapshots store, what errors quote.
// print(parse(text)) === text for any printed graph.
//
//   %12 = matmul(%10, %11) {transposeB=true} : f32[2,4,24,24]  # model.ts:58:15  att = q @ k.transpose(-2, -1)
//   %13 = mul(%12, 0.25) : f32[2,4,24,24]  # model.ts:58:15
//   %18 = fused_attention(%7, %8, %9) {causal=true, scale=0.25} : f32[2,4,24,16] meta{kernel="flash_causal", rule="sdpa", reason="isCausal=true"}
//   output logits=%40, loss=%52

import { KilnError, type SourceLoc, formatLoc } from './errors.ts';
import { type AttrValue, type Attrs, Graph, type Meta, type Node, type Operand, isNode } from './graph.ts';
import { getOp } from './registry.ts';
import { type DType, type TensorType, formatType, isDType } from './types.ts';

export function formatNumber(x: number): string {
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (Number.isNaN(x)) return 'nan';
  return Object.is(x, -0) ? '-0' : String(x);
}

/** A number as formatNumber writes it: decimal, exponent, inf, -inf, nan. */
export const NUMBER = /-?(inf|nan|\d+(\.\d+)?(e[-+]?\d+)?|\.\d+(e[-+]?\d+)?)/;

export function parseNumber(text: string): number {
  if (text === 'inf') return Infinity;
  if (text === '-inf') return -Infinity;
  if (text === 'nan' || text === '-nan') return NaN;
  return Number(text);
}

export function formatAttr(v: AttrValue): string {
  if (typeof v === 'number') return formatNumber(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(formatNumber).join(',')}]`;
  return String(v);
}

function formatOperand(x: Operand): string {
  return isNode(x) ? `%${x.id}` : formatNumber(x);
}

/** Attrs as printed: a leaf's dtype and shape are shown once, in its type. */
function printedAttrs(node: Node): [string, AttrValue][] {
  const hide = getOp(node.op).typeInAttrs ? ['dtype', 'shape'] : [];
  return Object.entries(node.attrs).filter(([k]) => !hide.includes(k));
}

function formatGroup(entries: [string, AttrValue][]): string {
  return `{${entries.map(([k, v]) => `${k}=${formatAttr(v)}`).join(', ')}}`;
}

export function printNode(node: Node): string {
  const attrs = printedAttrs(node);
  const attrText = attrs.length ? ` ${formatGroup(attrs)}` : '';
  const meta = Object.entries(node.meta ?? {});
  const metaText = meta.length ? ` meta${formatGroup(meta)}` : '';
  const line = `%${node.id} = ${node.op}(${node.inputs.map(formatOperand).join(', ')})${attrText} : ${formatType(node.type)}${metaText}`;
  if (!node.loc) return line;
  return `${line}  # ${formatLoc(node.loc)}${node.loc.text ? '  ' + node.loc.text : ''}`;
}

export function printGraph(graph: Graph): string {
  const lines = graph.nodes.map(printNode);
  lines.push(`output ${graph.outputs.map((o) => `${o.name}=%${o.node.id}`).join(', ')}`);
  return lines.join('\n') + '\n';
}

// ---- parser ----

class Cursor {
  pos = 0;
  constructor(readonly text: string, readonly lineNo: number) {}

  fail(what: string): never {
    throw new KilnError('KILN_E013', `IR text line ${this.lineNo}, column ${this.pos + 1}: expected ${what}, found "${this.text.slice(this.pos, this.pos + 12)}"`);
  }
  skipSpace(): void {
    while (this.text[this.pos] === ' ') this.pos++;
  }
  peek(s: string): boolean {
    this.skipSpace();
    return this.text.startsWith(s, this.pos);
  }
  eat(s: string): void {
    if (!this.peek(s)) this.fail(`"${s}"`);
    this.pos += s.length;
  }
  match(re: RegExp, what: string): string {
    this.skipSpace();
    const m = re.exec(this.text.slice(this.pos));
    if (!m || m.index !== 0) this.fail(what);
    this.pos += m[0].length;
    return m[0];
  }
  number(): number {
    return parseNumber(this.match(NUMBER, 'a number'));
  }
  attrValue(): AttrValue {
    if (this.peek('"')) return JSON.parse(this.match(/"(?:[^"\\]|\\.)*"/, 'a string')) as string;
    if (this.peek('true')) return (this.eat('true'), true);
    if (this.peek('false')) return (this.eat('false'), false);
    if (this.peek('null')) return (this.eat('null'), null);
    if (this.peek('[')) {
      this.eat('[');
      const items: number[] = [];
      while (!this.peek(']')) {
        if (items.length) this.eat(',');
        items.push(this.number());
      }
      this.eat(']');
      return items;
    }
    return this.number();
  }
  /** `{key=value, ...}`, as attrs and meta are written. */
  group(): Record<string, AttrValue> {
    const entries: Record<string, AttrValue> = {};
    this.eat('{');
    while (!this.peek('}')) {
      if (Object.keys(entries).length) this.eat(',');
      const key = this.match(/[A-Za-z_]\w*/, 'an attribute name');
      this.eat('=');
      entries[key] = this.attrValue();
    }
    this.eat('}');
    return entries;
  }
}

function parseType(c: Cursor): TensorType {
  const dtype = c.match(/[a-z0-9]+/, 'a dtype');
  if (!isDType(dtype)) c.fail('a dtype (f32, i32, bool)');
  c.eat('[');
  const shape: number[] = [];
  while (!c.peek(']')) {
    if (shape.length) c.eat(',');
    shape.push(Number(c.match(/\d+/, 'a dimension')));
  }
  c.eat(']');
  return { dtype: dtype as DType, shape };
}

function parseLoc(comment: string): SourceLoc | undefined {
  const m = /^(.*?):(\d+):(\d+)(?: {2}(.*))?$/.exec(comment);
  if (!m) return undefined;
  const loc = { file: m[1], line: Number(m[2]), col: Number(m[3]) };
  return m[4] === undefined ? loc : { ...loc, text: m[4] };
}

/** Where a line's `  # file:line:col` comment starts: the first "  # " outside a string attribute, or -1. */
function commentStart(line: string): number {
  let inString = false;
  for (let i = 0; i < line.length; i++) {
    if (inString) {
      if (line[i] === '\\') i++;
      else if (line[i] === '"') inString = false;
    } else if (line[i] === '"') inString = true;
    else if (line.startsWith('  # ', i)) return i;
  }
  return -1;
}

export function parseGraph(text: string): Graph {
  const graph = new Graph();
  const byId = new Map<number, Node>();
  let sawOutput = false;
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    const hash = commentStart(raw);
    const body = hash >= 0 ? raw.slice(0, hash) : raw;
    const c = new Cursor(body, i + 1);
    const ref = (): Node => {
      const id = Number(c.match(/%\d+/, 'a value %N').slice(1));
      const node = byId.get(id);
      return node ?? c.fail(`a value defined above (%${id} is not)`);
    };
    if (c.peek('output')) {
      c.eat('output');
      const outputs = [];
      while (c.pos < body.trimEnd().length) {
        if (outputs.length) c.eat(',');
        const name = c.match(/[\w.]+/, 'an output name'); // array outputs are named 0, 1, ...
        c.eat('=');
        outputs.push({ name, node: ref() });
      }
      graph.setOutputs(outputs);
      sawOutput = true;
      return;
    }
    const id = Number(c.match(/%\d+/, 'a value %N').slice(1));
    if (byId.has(id)) c.fail(`a new value id (%${id} is defined twice)`);
    c.eat('=');
    const op = c.match(/[a-z_][a-z0-9_]*/, 'an op name');
    c.eat('(');
    const inputs: Operand[] = [];
    while (!c.peek(')')) {
      if (inputs.length) c.eat(',');
      inputs.push(c.peek('%') ? ref() : c.number());
    }
    c.eat(')');
    const attrs = c.peek('{') ? c.group() : {};
    c.eat(':');
    const type = parseType(c);
    let meta: Meta | undefined;
    if (c.peek('meta')) {
      c.eat('meta');
      meta = c.group();
    }
    if (c.text.slice(c.pos).trim() !== '') c.fail('the end of the line');
    const loc = hash >= 0 ? parseLoc(raw.slice(hash + 4)) : undefined;
    let def;
    try {
      def = getOp(op, loc);
    } catch (e) {
      // Name the IR line too: the source location (if any) says where the node came from, not where the text is.
      throw e instanceof KilnError ? new KilnError(e.code, `IR text line ${i + 1}: ${e.detail}`, e.loc) : e;
    }
    const fullAttrs: Attrs = def.typeInAttrs ? { ...attrs, dtype: type.dtype, shape: [...type.shape] } : attrs;
    const node = graph.addRaw({ id, op, inputs, attrs: fullAttrs, type, ...(loc ? { loc } : {}), ...(meta ? { meta } : {}) });
    byId.set(id, node);
  });
  if (!sawOutput) throw new KilnError('KILN_E013', 'IR text has no output line');
  return graph;
}
