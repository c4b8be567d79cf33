// kiln dump: compile a model without running it and write its IR at one stage (or all), as text,
// JSON, Graphviz dot or SVG, or the difference between two stages.

import { basename, dirname, extname, join } from 'node:path';
import type { Graph } from '../../ir/graph.ts';
import { printGraph } from '../../ir/text.ts';
import { STAGES, type Stage } from '../../passes/index.ts';
import { writeFileAtomic } from '../../runtime/files.ts';
import { type ParsedArgs, stringFlag, usageError } from './args.ts';
import { diffGraphs, formatJson, graphToDot, stageToJson } from './graph-formats.ts';
import type { Command } from './main.ts';
import { fileError } from './report.ts';
import { DTYPE_FLAG, MODEL_FLAGS, TRAIN_FLAG, autocastFlag, modelSession, positiveInt } from './model.ts';
import { compileGenerator } from '../generate.ts';

const FORMATS = ['text', 'json', 'dot', 'svg'] as const;
type Format = (typeof FORMATS)[number];

const JSON_HELP =
  'json: per stage {"stage", "nodes": [{"id", "op", "inputs", "attrs", "type": {"dtype", "shape"}, "loc", "module"}], "outputs": [{"name", "node"}]}, ' +
  'an array of them for --stage all; an input or output is "%ID" for a node\'s value and a number for a scalar literal; ' +
  'inf, -inf and nan are the strings "inf", "-inf", "nan"; loc is "FILE:LINE:COL" or null; module is the module path or null';

export const dumpCommand: Command = {
  spec: {
    name: 'dump',
    summary: 'compile a model without running it and print its IR at a stage, as text, JSON, dot or SVG, or diff two stages',
    usage: 'kiln dump MODEL.ts [--stage traced|canonical|fused|lowered|decode|all] [--format text|json|dot|svg] [--diff STAGE_A STAGE_B] [--out FILE] [--weights W] [--config JSON|gpt2] [--batch B] [--seq T] [--train] [--dtype float16|float32]',
    example: `kiln dump examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96,"flash":false}' --batch 2 --seq 8 --format svg`,
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS,
      TRAIN_FLAG,
      DTYPE_FLAG,
      { name: 'stage', kind: 'string', choices: [...STAGES, 'decode', 'all'], default: 'fused', help: "the pass stage to show; all: every stage in order (text and json only); decode: one KV-cached decode step of `kiln generate` (--batch rows, greedy), as it runs, derived from forward() (passes/kv-cache.ts)" },
      { name: 'format', kind: 'string', choices: FORMATS, default: 'text', help: `text: the IR text form; dot: Graphviz clustered by module; svg: that dot drawn; ${JSON_HELP}` },
      { name: 'diff', kind: 'string', values: 2, help: 'STAGE_A STAGE_B: the nodes stage B removed, added and changed relative to stage A, as text (--stage is ignored)' },
      { name: 'out', kind: 'string', file: 'output', help: 'write to this file instead of printing; without it svg goes to stdout when piped and, on a terminal, to MODEL.STAGE.svg beside MODEL.ts' },
    ],
  },

  async run(args, mod) {
    const format = stringFlag(args, 'format') as Format;
    const diff = diffStages(args);
    const stage = stringFlag(args, 'stage') as Stage | 'decode' | 'all';
    if (diff && format !== 'text') throw usageError('dump', `--diff prints text; drop --format ${format}`);
    if (stage === 'all' && (format === 'dot' || format === 'svg')) throw usageError('dump', `--format ${format} draws one stage; pick one with --stage`);

    if (stage === 'decode' && args.flags.get('train')) throw usageError('dump', '--stage decode shows generation, not the training step; drop --train');
    const session = await modelSession('dump', args, mod, { backend: 'cpu' }); // the passes are the same for every backend
    const decode = stage === 'decode' && !diff ? await decodeGraph(session.model, positiveInt('dump', args, 'batch'), autocastFlag('dump', args)) : undefined;
    const graphOf = (s: Stage | 'decode'): Graph => (s === 'decode' ? decode! : session.compilation.passes.stages.get(s)!);
    const shown: (Stage | 'decode')[] = diff ?? (stage === 'all' ? [...STAGES] : [stage]);
    let output: string;
    if (diff) output = diffGraphs(diff[0], graphOf(diff[0]), diff[1], graphOf(diff[1]));
    else if (format === 'json') output = formatJson(shown.map((s) => stageToJson(s, graphOf(s))), stage === 'all');
    else if (format === 'text') output = shown.map((s) => (stage === 'all' ? `== ${s} ==\n` : '') + printGraph(graphOf(s))).join('\n');
    else {
      const dot = graphToDot(graphOf(shown[0]), `${args.positionals[0]} ${shown[0]}`);
      output = format === 'dot' ? dot : await renderSvg(dot);
    }

    const out = stringFlag(args, 'out') ?? (format === 'svg' && process.stdout.isTTY ? svgBeside(args.positionals[0], shown[0]) : undefined);
    if (out) {
      await writeFileAtomic(out, output).catch((e: unknown) => {
        throw fileError(e, out, '--out');
      });
      console.log(`wrote ${out} (${diff ? `diff ${diff.join(' -> ')}` : `${stage}, ${format}`})`);
    } else {
      console.log(output.replace(/\n$/, ''));
    }
  },
};

/** One KV-cached decode step of `kiln generate` for `batch` rows (greedy), after the lowered passes. */
async function decodeGraph(model: Parameters<typeof compileGenerator>[0], batch: number, autocast: 'f16' | undefined): Promise<Graph> {
  const generator = await compileGenerator(model, { backend: 'cpu', autocast: autocast ?? false });
  return generator.decodeStage(batch, { greedy: true });
}

/** `--diff canonical,fused` as two known stages (a space between them works too), or null without --diff. */
function diffStages(args: ParsedArgs): [Stage, Stage] | null {
  const text = stringFlag(args, 'diff');
  if (text === undefined) return null;
  const names = text.split(/[\s,]+/).filter(Boolean);
  if (names.length !== 2) throw usageError('dump', `--diff needs two stages, e.g. --diff canonical,fused; got "${text}"`);
  for (const n of names) {
    if (!(STAGES as readonly string[]).includes(n)) throw usageError('dump', `--diff stages must be among ${STAGES.join(', ')}, got "${n}"`);
  }
  return names as [Stage, Stage];
}

async function renderSvg(dot: string): Promise<string> {
  const viz = await (await import('@viz-js/viz')).instance();
  return viz.renderString(dot, { format: 'svg' });
}

/** Where `kiln dump MODEL.ts --format svg` on a terminal writes: beside the model, `model.fused.svg` (ignored by git). */
export function svgBeside(modelPath: string, stage: Stage | 'decode'): string {
  return join(dirname(modelPath), `${basename(modelPath, extname(modelPath))}.${stage}.svg`);
}
