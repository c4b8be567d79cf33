// `kiln dump`: golden IR of the nanoGPT example per stage and format, and the pure formatters on small graphs.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { parseArgs } from '../compiler/cli/args.ts';
import { dumpCommand, svgBeside } from '../compiler/cli/dump.ts';
import { type JsonStage, diffGraphs, graphToDot, stageToJson } from '../compiler/cli/graph-formats.ts';
import { KilnError } from '../ir/errors.ts';
import { parseGraph } from '../ir/text.ts';

const MODEL = 'examples/nanogpt/model.ts';
const SMALL = { n_layer: 2, n_head: 2, n_embd: 32, block_size: 32, vocab_size: 96 };
const dir = mkdtempSync(join(tmpdir(), 'kiln-dump-'));

/** Runs `kiln dump MODEL.ts --config ... --batch 2 --seq 8 ...flags` as main() would, returning what it printed. */
async function dump(flash: boolean, ...flags: string[]): Promise<string> {
  const argv = [MODEL, '--config', JSON.stringify({ ...SMALL, flash }), '--batch', '2', '--seq', '8', ...flags];
  const printed: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void printed.push(a.join(' ')));
  try {
    await dumpCommand.run(parseArgs(dumpCommand.spec, argv), await import('../examples/nanogpt/model.ts'));
  } finally {
    log.mockRestore();
  }
  return printed.join('\n') + '\n';
}

async function usageErrorOf(...flags: string[]): Promise<KilnError> {
  const e = await dump(false, ...flags).catch((err: unknown) => err);
  expect(e).toBeInstanceOf(KilnError);
  return e as KilnError;
}

const NODE_KEYS = ['attrs', 'id', 'inputs', 'loc', 'module', 'op', 'type'];

function expectStageShape(s: JsonStage): void {
  expect(Object.keys(s).sort()).toEqual(['nodes', 'outputs', 'stage']);
  const seen = new Set<string>();
  for (const n of s.nodes) {
    expect(Object.keys(n).filter((k) => k !== 'meta').sort()).toEqual(NODE_KEYS); // meta only where a pass recorded some
    if (n.meta) expect(Object.keys(n.attrs)).not.toContain('rule');
    expect(Object.keys(n.type).sort()).toEqual(['dtype', 'shape']);
    expect(n.loc === null || /^[^:]+:\d+:\d+$/.test(n.loc)).toBe(true);
    for (const x of n.inputs) if (typeof x === 'string' && x.startsWith('%')) expect(seen.has(x)).toBe(true);
    seen.add(`%${n.id}`);
  }
  for (const o of s.outputs) expect(seen.has(o.node)).toBe(true);
}

describe('kiln dump on nanoGPT', () => {
  for (const [flash, label] of [[false, 'manual'], [true, 'flash']] as const) {
    it(`prints the fused stage's IR text for ${label} attention`, async () => {
      await expect(await dump(flash)).toMatchFileSnapshot(`./__snapshots__/cli/dump-${label}.fused.txt`);
    });

    it(`prints the fused stage as one JSON object per stage for ${label} attention`, async () => {
      const text = await dump(flash, '--format', 'json');
      await expect(text).toMatchFileSnapshot(`./__snapshots__/cli/dump-${label}.fused.json`);
      const stage = JSON.parse(text) as JsonStage;
      expectStageShape(stage);
      expect(stage.stage).toBe('fused');
      expect(stage.outputs.map((o) => o.name)).toEqual(['logits', 'loss']);
      const fused = stage.nodes.filter((n) => n.op === 'fused_attention');
      expect(fused).toHaveLength(2);
      expect(fused[0].attrs).toMatchObject({ causal: true, scale: 0.25 });
      expect(fused[0].meta).toMatchObject({ kernel: 'flash_causal', rule: flash ? 'sdpa' : 'attention_chain' });
      expect(fused[0].module).toBe('transformer.h.0.attn');
    });
  }

  it('gives each JSON node its source line, scalar literals as numbers and -inf as a string', async () => {
    const stage = JSON.parse(await dump(false, '--stage', 'traced', '--format', 'json')) as JsonStage;
    expectStageShape(stage);
    const scores = stage.nodes.find((n) => n.op === 'matmul' && n.loc === 'examples/nanogpt/model.ts:94:19');
    expect(scores?.module).toBe('transformer.h.0.attn');
    expect(stage.nodes.find((n) => n.op === 'mul' && n.inputs[0] === `%${scores!.id}`)?.inputs).toEqual([`%${scores!.id}`, 0.25]);
    expect(stage.nodes.find((n) => n.op === 'masked_fill')?.inputs[2]).toBe('-inf');
  });

  it('prints every stage in order with --stage all, as headed text or a JSON array', async () => {
    const text = await dump(false, '--stage', 'all');
    expect(text.split('\n').filter((l) => l.startsWith('=='))).toEqual(['== traced ==', '== canonical ==', '== fused ==', '== lowered ==']);
    const stages = JSON.parse(await dump(false, '--stage', 'all', '--format', 'json')) as JsonStage[];
    expect(stages.map((s) => s.stage)).toEqual(['traced', 'canonical', 'fused', 'lowered']);
    stages.forEach(expectStageShape);
  });

  it('draws dot with nested module clusters and the fused node filled and labelled with its kernel', async () => {
    const dot = await dump(false, '--format', 'dot');
    const lines = dot.split('\n');
    const opens = (path: string): number => lines.findIndex((l) => l.trim() === `subgraph "cluster_${path}" {`);
    const indent = (i: number): number => lines[i].length - lines[i].trimStart().length;
    expect(opens('transformer.h.0')).toBeGreaterThan(opens('transformer.h'));
    expect(opens('transformer.h.0.attn')).toBeGreaterThan(opens('transformer.h.0'));
    expect(indent(opens('transformer.h.0.attn'))).toBeGreaterThan(indent(opens('transformer.h.0')));
    const fused = lines.find((l) => l.trim().startsWith('n116 ['));
    expect(fused).toContain('%116 fused_attention\\nfused: flash_causal (rule attention_chain)');
    expect(fused).toContain('style=filled');
    expect(indent(lines.indexOf(fused!))).toBe(indent(opens('transformer.h.0.attn')) + 2); // inside the attn cluster
    expect(lines.find((l) => l.trim().startsWith('n3 ['))).toMatch(/label="%3 param\\ntransformer\.wte\.weight\\nf32\[96,32\]".*fontsize=8/);
    expect(dot).toContain('n116 -> n36;');
  });

  it('shows scalar operands in the consumer label of the dot graph', async () => {
    const dot = await dump(false, '--stage', 'traced', '--format', 'dot');
    expect(dot).toMatch(/label="%32 masked_fill\(%27, %31, -inf\)\\nf32\[2,2,8,8\]"/);
  });

  it('renders svg with the fused node and writes it to --out', async () => {
    const out = join(dir, 'fused.svg');
    expect(await dump(false, '--format', 'svg', '--out', out)).toBe(`wrote ${out} (fused, svg)\n`);
    const svg = readFileSync(out, 'utf8');
    expect(svg.startsWith('<?xml') || svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('%116 fused_attention');
    expect(svg).toContain('fused: flash_causal');
  });

  it('without --out, svg goes to stdout when piped and beside MODEL.ts on a terminal, never into the current folder', async () => {
    expect(svgBeside('examples/nanogpt/model.ts', 'fused')).toBe('examples/nanogpt/model.fused.svg');
    expect(svgBeside('model.ts', 'traced')).toBe('model.traced.svg');
    const piped = await dump(false, '--stage', 'traced', '--format', 'svg');
    expect(piped).toMatch(/^(<\?xml|<svg)/);
    const beside = svgBeside(MODEL, 'traced');
    const tty = Object.getOwnPropertyDescriptor(process.stdout, 'isTTY');
    Object.defineProperty(process.stdout, 'isTTY', { value: true, configurable: true });
    try {
      expect(await dump(false, '--stage', 'traced', '--format', 'svg')).toBe(`wrote ${beside} (traced, svg)\n`);
      expect(readFileSync(beside, 'utf8')).toContain('masked_fill');
    } finally {
      if (tty) Object.defineProperty(process.stdout, 'isTTY', tty);
      else delete (process.stdout as { isTTY?: boolean }).isTTY;
      rmSync(beside, { force: true });
    }
    expect(existsSync(beside)).toBe(false);
  });

  it('diffs fused against canonical: the attention chain removed, fused_attention added', async () => {
    const diff = await dump(false, '--diff', 'canonical', 'fused');
    const lines = diff.split('\n');
    expect(lines[0]).toBe('fused vs canonical: 12 removed, 2 added, 2 changed');
    expect(lines.slice(1, 3)).toEqual(['--- canonical', '+++ fused']);
    expect(lines.some((l) => /^- %33 = softmax\(%32\)/.test(l))).toBe(true);
    expect(lines.some((l) => /^\+ %116 = fused_attention\(%22, %20, %24\)/.test(l))).toBe(true);
    expect(lines).toContain('+ %36 = transpose(%116) {dim0=1, dim1=2} : f32[2,8,2,16]  # examples/nanogpt/model.ts:100:11  y = y.transpose(1, 2).contiguous().view(B, T, C); // re-assemble all head outputs side by side');
  });

  const misuse: [string, string[], RegExp][] = [
    ['an unknown --stage', ['--stage', 'optimized'], /--stage must be one of traced, canonical, fused, lowered, decode, all, got "optimized"/],
    ['--diff with one stage', ['--diff', 'fused'], /--diff needs 2 values/],
    ['--diff with an unknown stage', ['--diff', 'canonical', 'optimized'], /--diff stages must be among/],
    ['--diff with --format json', ['--diff', 'canonical', 'fused', '--format', 'json'], /--diff prints text/],
    ['--stage all drawn as svg', ['--stage', 'all', '--format', 'svg'], /draws one stage/],
  ];
  for (const [label, flags, message] of misuse) {
    it(`rejects ${label} as a usage error`, async () => {
      const e = await usageErrorOf(...flags);
      expect(e.code).toBe('KILN_E015');
      expect(e.message).toMatch(message);
    });
  }
});

describe('kiln dump --dtype float16', () => {
  it('shows the casts autocast inserted and the matmuls and fused attention in f16', async () => {
    const text = await dump(false, '--dtype', 'float16');
    // ln_1's output cast to f16 for c_attn, on c_attn's line, marked as autocast's.
    expect(text).toMatch(/^%\d+ = cast\(%11\) \{dtype="f16"\} : f16\[2,8,32\] meta\{rule="autocast"\}  # examples\/nanogpt\/model\.ts:78:33 {2}let \[q, k, v\] = this\.c_attn\.forward\(x\)/m);
    expect(text).toMatch(/^%13 = matmul\(%\d+, %\d+\) \{transposeA=false, transposeB=true\} : f16\[2,8,96\]/m);
    expect(text).toMatch(/^%\d+ = fused_attention\(%\d+, %\d+, %\d+\) \{causal=true, scale=0\.25, scaling="pre_qk"\} : f16\[2,2,8,16\]/m);
    expect(text).toMatch(/^%\d+ = cross_entropy\(%\d+, %\d+\) \{ignoreIndex=-1\} : f32\[\]/m);
    expect(await dump(false)).not.toMatch(/= cast\(/);
  });

  it('refuses --dtype bfloat16 with one line saying kiln has no bf16 compute', async () => {
    const e = await usageErrorOf('--dtype', 'bfloat16');
    expect(e.message).toBe('KILN_E015 kiln dump: --dtype bfloat16: kiln has no bf16 compute on WebGPU yet (WGSL has no bf16 type); use --dtype float16 or float32; see kiln dump --help');
    expect((await usageErrorOf('--dtype', 'half')).message).toMatch(/^KILN_E015 kiln dump: --dtype must be float16 or float32, got "half"/);
  });
});

describe('graph formats', () => {
  const before = parseGraph(
    ['%0 = input() {name="x"} : f32[4]', '%1 = mul(%0, 2) : f32[4]', '%2 = exp(%1) : f32[4]', '%3 = neg(%2) : f32[4]', 'output y=%3'].join('\n'),
  );
  const after = parseGraph(['%0 = input() {name="x"} : f32[4]', '%4 = full() {value=inf} : f32[4]', '%3 = neg(%4) : f32[4]', 'output y=%3'].join('\n'));

  it('diffs by node id, removals before the additions that replace them', () => {
    expect(diffGraphs('a', before, 'b', after)).toBe(
      [
        'b vs a: 2 removed, 1 added, 1 changed',
        '--- a',
        '+++ b',
        '- %1 = mul(%0, 2) : f32[4]',
        '- %2 = exp(%1) : f32[4]',
        '+ %4 = full() {value=inf} : f32[4]',
        '- %3 = neg(%2) : f32[4]',
        '+ %3 = neg(%4) : f32[4]',
        '',
      ].join('\n'),
    );
    expect(diffGraphs('a', before, 'a', before)).toBe('a vs a: 0 removed, 0 added, 0 changed\n--- a\n+++ a\n');
  });

  it('encodes node refs as "%id", literals as numbers and non-finite numbers as strings in JSON', () => {
    const s = stageToJson('b', after);
    expect(s.nodes[1]).toEqual({ id: 4, op: 'full', inputs: [], attrs: { value: 'inf', dtype: 'f32', shape: [4] }, type: { dtype: 'f32', shape: [4] }, loc: null, module: null });
    expect(stageToJson('a', before).nodes[1].inputs).toEqual(['%0', 2]);
    expect(s.outputs).toEqual([{ name: 'y', node: '%3' }]);
  });

  it('draws nodes without a module at the top level and quotes labels for dot', () => {
    const dot = graphToDot(before, 'say "hi"');
    expect(dot).toContain('digraph "say \\"hi\\"" {');
    expect(dot).toContain('n1 [label="%1 mul(%0, 2)\\nf32[4]"];');
    expect(dot).not.toContain('subgraph');
    expect(dot).toContain('n3 -> "output y";');
  });
});
