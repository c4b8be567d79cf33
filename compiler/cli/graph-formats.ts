// The IR in the other shapes `kiln dump` writes: JSON for programs, Graphviz dot for people, and a
// diff of two stages. The text form itself is ir/text.ts's printGraph; every function here is pure.

import { formatLoc } from '../../ir/errors.ts';
import { type AttrValue, type Graph, type Node, type Operand, isNode } from '../../ir/graph.ts';
import { getOp } from '../../ir/registry.ts';
import { formatNumber, printNode } from '../../ir/text.ts';
import { formatType } from '../../ir/types.ts';

// ---- JSON ----

/** A number as JSON: finite numbers as themselves, the others as the strings "inf", "-inf", "nan". */
export type JsonNumber = number | 'inf' | '-inf' | 'nan';

export interface JsonNode {
  id: number;
  op: string;
  /** `"%12"` for another node's value, a number for a scalar literal. */
  inputs: (string | JsonNumber)[];
  attrs: Record<string, JsonNumber | boolean | string | JsonNumber[] | null>;
  type: { dtype: string; shape: number[] };
  /** `FILE:LINE:COL` of the user's source line, or null. */
  loc: string | null;
  /** The module path whose forward() made the node (`transformer.h.0.attn`), or null. */
  module: string | null;
  /** What a pass recorded (rule, kernel, reason), apart from attrs; only on nodes that have some. */
  meta?: Record<string, JsonNumber | boolean | string | JsonNumber[] | null>;
}

export interface JsonStage {
  stage: string;
  nodes: JsonNode[];
  outputs: { name: string; node: string }[];
}

function jsonNumber(x: number): JsonNumber {
  return Number.isFinite(x) ? x : (formatNumber(x) as JsonNumber);
}

function jsonAttr(v: AttrValue): JsonNode['attrs'][string] {
  if (typeof v === 'number') return jsonNumber(v);
  if (Array.isArray(v)) return v.map(jsonNumber);
  return v as boolean | string | null;
}

const ref = (node: Node): string => `%${node.id}`;

function jsonOperand(x: Operand): string | JsonNumber {
  return isNode(x) ? ref(x) : jsonNumber(x);
}

export function stageToJson(stage: string, graph: Graph): JsonStage {
  const nodes = graph.nodes.map(
    (n): JsonNode => ({
      id: n.id,
      op: n.op,
      inputs: n.inputs.map(jsonOperand),
      attrs: Object.fromEntries(Object.entries(n.attrs).map(([k, v]) => [k, jsonAttr(v)])),
      type: { dtype: n.type.dtype, shape: [...n.type.shape] },
      loc: n.loc ? formatLoc(n.loc) : null,
      module: n.scope ?? null,
      ...(n.meta ? { meta: Object.fromEntries(Object.entries(n.meta).map(([k, v]) => [k, jsonAttr(v)])) } : {}),
    }),
  );
  return { stage, nodes, outputs: graph.outputs.map((o) => ({ name: o.name, node: ref(o.node) })) };
}

/** One node per line, so the file reads (and diffs) like the text form. */
function formatStageJson(s: JsonStage, indent: string): string {
  const nodes = s.nodes.map((n) => `${indent}  ${JSON.stringify(n)}`).join(',\n');
  return `${indent}{"stage": ${JSON.stringify(s.stage)}, "nodes": [\n${nodes}\n${indent}], "outputs": ${JSON.stringify(s.outputs)}}`;
}

/** One stage as one JSON object; several as an array of them. */
export function formatJson(stages: readonly JsonStage[], asArray: boolean): string {
  if (!asArray) return stages.map((s) => formatStageJson(s, '')).join('\n') + '\n';
  return `[\n${stages.map((s) => formatStageJson(s, '  ')).join(',\n')}\n]\n`;
}

// ---- Graphviz dot ----

const FUSED_FILL = '#ffd27f';
const LEAF_FILL = '#eef2f7';

/** A node a fusion rule made: its meta carries the rule's name (and the kernel it lowers to). */
export function isFused(node: Node): boolean {
  return typeof node.meta?.rule === 'string';
}

/** Leaves and constants: nodes with no node inputs whose type lives in their attrs (params, buffers, full, ...). */
function isLeaf(node: Node): boolean {
  const def = getOp(node.op);
  return Boolean(def.leaf || def.typeInAttrs);
}

/** The module a node is drawn in: its scope, or for a parameter or buffer the module its state-dict key names. */
export function moduleOf(node: Node): string | null {
  if (node.scope) return node.scope;
  const name = node.attrs.name;
  if (getOp(node.op).leaf && typeof name === 'string' && name.includes('.')) return name.slice(0, name.lastIndexOf('.'));
  return null;
}

function quote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

function nodeLabel(node: Node): string {
  const hasScalar = node.inputs.some((x) => !isNode(x));
  const call = hasScalar ? `(${node.inputs.map((x) => (isNode(x) ? ref(x) : formatNumber(x))).join(', ')})` : '';
  const lines = [`${ref(node)} ${node.op}${call}`];
  if (isLeaf(node) && typeof node.attrs.name === 'string') lines.push(node.attrs.name);
  if (isFused(node)) lines.push(`fused: ${String(node.meta?.kernel ?? node.op)} (rule ${String(node.meta?.rule)})`);
  lines.push(formatType(node.type));
  return lines.join('\n');
}

function nodeStatement(node: Node): string {
  const style = isFused(node)
    ? ['style=filled', `fillcolor=${quote(FUSED_FILL)}`, 'penwidth=2']
    : isLeaf(node)
      ? ['style="rounded,filled"', `fillcolor=${quote(LEAF_FILL)}`, 'fontsize=8', 'height=0.2', 'margin="0.05,0.02"']
      : [];
  const tip = node.loc ? [`tooltip=${quote(formatLoc(node.loc) + (node.loc.text ? '  ' + node.loc.text : ''))}`] : [];
  return `n${node.id} [${[`label=${quote(nodeLabel(node))}`, ...style, ...tip].join(', ')}];`;
}

interface Cluster {
  path: string;
  nodes: Node[];
  children: Map<string, Cluster>;
}

/** Module paths as a tree: `transformer.h.0.attn` sits inside `transformer.h.0`, inside `transformer.h`, ... */
function clusterTree(graph: Graph): Cluster {
  const root: Cluster = { path: '', nodes: [], children: new Map() };
  for (const node of graph.nodes) {
    let at = root;
    const parts = moduleOf(node)?.split('.') ?? [];
    parts.forEach((part, i) => {
      if (!at.children.has(part)) at.children.set(part, { path: parts.slice(0, i + 1).join('.'), nodes: [], children: new Map() });
      at = at.children.get(part)!;
    });
    at.nodes.push(node);
  }
  return root;
}

function clusterLines(cluster: Cluster, indent: string): string[] {
  const lines = cluster.nodes.map((n) => indent + nodeStatement(n));
  for (const child of cluster.children.values()) {
    lines.push(`${indent}subgraph ${quote('cluster_' + child.path)} {`);
    lines.push(`${indent}  label=${quote(child.path)}; style=rounded; color="#9aa5b1"; fontsize=10;`);
    lines.push(...clusterLines(child, indent + '  '));
    lines.push(`${indent}}`);
  }
  return lines;
}

/** Graphviz source: nodes labelled `%id op` and type, clustered by module path, fused nodes filled. */
export function graphToDot(graph: Graph, title: string): string {
  const lines = [
    `digraph ${quote(title)} {`,
    `  graph [label=${quote(title)}, labelloc=t, fontname="Helvetica", rankdir=TB];`,
    '  node [shape=box, fontname="Helvetica", fontsize=10];',
    '  edge [arrowsize=0.6];',
    ...clusterLines(clusterTree(graph), '  '),
  ];
  for (const node of graph.nodes) {
    for (const x of node.inputs) if (isNode(x)) lines.push(`  n${x.id} -> n${node.id};`);
  }
  for (const o of graph.outputs) {
    lines.push(`  ${quote('output ' + o.name)} [shape=plaintext, fontsize=10];`, `  n${o.node.id} -> ${quote('output ' + o.name)};`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

// ---- diff ----

function outputLine(graph: Graph): string {
  return `output ${graph.outputs.map((o) => `${o.name}=${ref(o.node)}`).join(', ')}`;
}

/**
 * What stage `after` changed relative to `before`, by node id: removed (`- `), added (`+ `), and
 * changed (same id, another printed line: `- old` then `+ new`), in graph order, after a summary line.
 */
export function diffGraphs(beforeName: string, before: Graph, afterName: string, after: Graph): string {
  const oldPosition = new Map(before.nodes.map((n, i) => [n.id, i]));
  const newIds = new Set(after.nodes.map((n) => n.id));
  const body: string[] = [];
  const counts = { removed: 0, added: 0, changed: 0 };
  let added: string[] = [];
  let next = 0; // the first node of `before` not yet shown or passed
  // Removed nodes show where they stood, added ones where they now stand, removals first (as diff does).
  const flushUpTo = (end: number): void => {
    for (; next < end; next++) {
      const gone = before.nodes[next];
      if (newIds.has(gone.id)) continue; // kept, shown (if changed) at its place in `after`
      body.push(`- ${printNode(gone)}`);
      counts.removed++;
    }
    body.push(...added);
    added = [];
  };
  for (const node of after.nodes) {
    const pos = oldPosition.get(node.id);
    if (pos === undefined) {
      added.push(`+ ${printNode(node)}`);
      counts.added++;
      continue;
    }
    flushUpTo(pos);
    next = Math.max(next, pos + 1);
    const old = before.nodes[pos];
    if (printNode(old) !== printNode(node)) {
      body.push(`- ${printNode(old)}`, `+ ${printNode(node)}`);
      counts.changed++;
    }
  }
  flushUpTo(before.nodes.length);
  if (outputLine(before) !== outputLine(after)) body.push(`- ${outputLine(before)}`, `+ ${outputLine(after)}`);
  const summary = `${afterName} vs ${beforeName}: ${counts.removed} removed, ${counts.added} added, ${counts.changed} changed`;
  return [summary, `--- ${beforeName}`, `+++ ${afterName}`, ...body].join('\n') + '\n';
}
