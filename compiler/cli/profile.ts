// kiln profile: where a forward's GPU time goes, kernel by kernel, compiled against eager. Kernels are
// timed with GPU timestamps when the adapter has timestamp-query (each kernel in a compute pass of its
// own), else by the wall clock, each kernel replayed alone. Warm-up forwards first, then the median of
// each kernel over --iters forwards.

import { lowerGraph } from '../../codegen/index.ts';
import { formatLoc } from '../../ir/errors.ts';
import type { Node } from '../../ir/graph.ts';
import { Executor, type Feed, type KilnDevice, getDevice, upload } from '../../runtime/webgpu/index.ts';
import { timeEagerKernels } from '../../runtime/webgpu/eager.ts';
import { type Clock, type KernelTime, KernelTimer } from '../../runtime/webgpu/timing.ts';
import { useBackend } from '../eager.ts';
import { stringFlag, usageError } from './args.ts';
import type { Command } from './main.ts';
import { ProgressLine } from './progress.ts';
import { MODEL_FLAGS, type ModelSession, modelSession, positiveInt } from './model.ts';
import { getOp } from '../../ir/registry.ts';
import { leafFeeder, leafKind, stateTensors } from '../leaves.ts';

type Mode = 'compiled' | 'eager';

/** One kernel (compiled: `%12`, the IR value it computes) or one op (eager: `#3`, its place in the forward). */
export interface KernelRow {
  readonly id: string;
  readonly op: string;
  readonly loc: string;
  readonly medianUs: number;
  /** Of the sum of the medians. */
  readonly share: number;
}

export interface ModeProfile {
  readonly kernels: readonly KernelRow[];
  /** Summed medians per op kind, and how many kernels of that kind. */
  readonly byOp: Readonly<Record<string, { us: number; count: number }>>;
  /** GPU time per forward: the median over forwards of each forward's summed kernel times. */
  readonly totalUs: number;
  /** The sum of the kernels' medians (what the shares add up to); far below totalUs means noisy forwards. */
  readonly kernelMediansUs: number;
}

export interface Profile {
  readonly model: string;
  readonly input: readonly number[];
  readonly adapter: string;
  readonly clock: Clock;
  readonly warmup: number;
  readonly iters: number;
  readonly modes: Partial<Record<Mode, ModeProfile>>;
  /** Eager over compiled total GPU time, when both ran. */
  readonly eagerOverCompiled?: number;
}

export const profileCommand: Command = {
  spec: {
    name: 'profile',
    summary: 'time every kernel of a forward on the GPU, compiled against eager',
    usage: 'kiln profile MODEL.ts [--weights W.safetensors] [--config JSON|gpt2] [--batch B] [--seq T] [--iters N] [--warmup N] [--mode eager|compiled|both] [--json] [--device webgpu]',
    example: `kiln profile examples/nanogpt/model.ts --config '{"n_layer":1,"n_head":1,"n_embd":8,"block_size":8,"vocab_size":11}' --batch 1 --seq 4 --iters 10`,
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS,
      { name: 'iters', kind: 'string', default: '10', help: 'timed forwards per mode; each kernel shows its median' },
      { name: 'warmup', kind: 'string', default: '2', help: 'untimed forwards first (pipelines, uploads, caches)' },
      { name: 'mode', kind: 'string', choices: ['eager', 'compiled', 'both'], default: 'both', help: 'op by op, compile() first, or both side by side' },
      { name: 'json', kind: 'boolean', help: 'print the profile as one JSON object instead of tables' },
      { name: 'device', kind: 'string', choices: ['webgpu'], default: 'webgpu', help: 'where to run (profiling times GPU kernels)' },
    ],
  },

  async run(args, mod) {
    const iters = positiveInt('profile', args, 'iters');
    const warmup = Number(stringFlag(args, 'warmup'));
    if (!Number.isInteger(warmup) || warmup < 0) throw usageError('profile', `--warmup must be a non-negative integer, got ${stringFlag(args, 'warmup')}`);
    const mode = stringFlag(args, 'mode');
    // Compiled for the cpu backend: the graph is what is needed; the profiler runs its own Executor.
    const session = await modelSession('profile', args, mod, { backend: 'cpu' });
    const kdev = await getDevice();
    const timer = new KernelTimer(kdev);
    const modes: Partial<Record<Mode, ModeProfile>> = {};
    try {
      if (mode !== 'eager') {
        const compiled = await compiledForward(kdev, session, timer);
        try {
          modes.compiled = summarize(await measure('compiled', compiled.forward, warmup, iters), (n) => `%${n.id}`);
        } finally {
          compiled.release();
        }
      }
      if (mode !== 'compiled') modes.eager = summarize(await measure('eager', await eagerForward(session, timer), warmup, iters), (_, i) => `#${i + 1}`);
    } finally {
      timeEagerKernels(null);
      await useBackend('cpu');
      timer.destroy();
    }
    const profile: Profile = {
      model: args.positionals[0],
      input: session.args[0]?.shape ?? [],
      adapter: kdev.description,
      clock: timer.clock,
      warmup,
      iters,
      modes,
      ...(modes.eager && modes.compiled ? { eagerOverCompiled: modes.eager.totalUs / modes.compiled.totalUs } : {}),
    };
    console.log(args.flags.get('json') ? JSON.stringify(profile, null, 2) : formatProfile(profile));
  },
};

/** One timed forward: runs it and returns each kernel's time, in dispatch order. */
type TimedForward = () => Promise<KernelTime[]>;

/** The compiled graph on an Executor of its own, its leaves fed as compile() feeds them; release() frees its buffers. */
async function compiledForward(kdev: KilnDevice, session: ModelSession, timer: KernelTimer): Promise<{ forward: TimedForward; release(): void }> {
  const { compilation: c, model, args } = session;
  const graph = c.passes.graph;
  const leaf = leafFeeder(graph, stateTensors(model), c.trace.argNames, args);
  const feeds = new Map<Node, Feed>();
  const uploaded: GPUBuffer[] = [];
  for (const node of graph.nodes.filter((n) => getOp(n.op).leaf)) {
    const host = leaf(node).readHost();
    if (!host) continue;
    if (leafKind(node).fedPerCall) {
      feeds.set(node, host);
      continue;
    }
    // Weights and folded constants are uploaded once, as the webgpu backend keeps them.
    const buffer = upload(kdev, host, `${node.op} ${String(node.attrs.name)}`);
    feeds.set(node, buffer);
    uploaded.push(buffer);
  }
  const exec = await Executor.create(kdev, lowerGraph(graph, kdev.limits));
  return {
    forward: () => {
      exec.run(feeds, timer);
      return timer.collect();
    },
    release: () => {
      exec.destroy();
      for (const buffer of uploaded) buffer.destroy();
    },
  };
}

/** model.forward op by op on the webgpu eager backend, every kernel it runs timed. */
async function eagerForward(session: ModelSession, timer: KernelTimer): Promise<TimedForward> {
  await useBackend('webgpu');
  timeEagerKernels(timer);
  const forward = session.model.forward as (...a: unknown[]) => unknown;
  return async () => {
    forward.apply(session.model, session.args);
    return timer.collect();
  };
}

/** Warm-up forwards, then `iters` timed ones, with a progress line (rate, time left) on stderr: in place on a terminal, every 10 s elsewhere. */
async function measure(mode: Mode, forward: TimedForward, warmup: number, iters: number): Promise<KernelTime[][]> {
  const runs: KernelTime[][] = [];
  const total = warmup + iters;
  const progress = new ProgressLine(mode.padEnd(8), total, { unit: 'forward' });
  for (let i = 0; i < total; i++) {
    progress.update(i);
    const times = await forward();
    if (i >= warmup) runs.push(times);
  }
  progress.finish();
  const counts = new Set(runs.map((r) => r.length));
  if (counts.size > 1) throw new Error(`the ${mode} forward dispatched ${[...counts].join(' then ')} kernels: its kernels differ between calls, so they cannot be compared`);
  return runs;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Each kernel's median, its share, totals per op kind, and the median forward's total. */
function summarize(runs: readonly KernelTime[][], idOf: (node: Node, index: number) => string): ModeProfile {
  const first = runs[0] ?? [];
  const medians = first.map((_, i) => median(runs.map((r) => r[i].ns)) / 1000);
  const sum = medians.reduce((a, b) => a + b, 0);
  const kernels = first.map(({ kernel }, i): KernelRow => ({
    id: idOf(kernel.node, i),
    op: kernel.node.op,
    loc: kernel.node.loc ? formatLoc(kernel.node.loc) : '',
    medianUs: medians[i],
    share: sum > 0 ? medians[i] / sum : 0,
  }));
  const byOp: Record<string, { us: number; count: number }> = {};
  for (const k of kernels) {
    byOp[k.op] ??= { us: 0, count: 0 };
    byOp[k.op].us += k.medianUs;
    byOp[k.op].count++;
  }
  return { kernels, byOp, totalUs: median(runs.map((r) => r.reduce((a, k) => a + k.ns, 0))) / 1000, kernelMediansUs: sum };
}

const us = (x: number): string => x.toFixed(1);

/** The profile as tables: each mode's kernels, then op kinds side by side, then the totals. */
export function formatProfile(p: Profile): string {
  const clock =
    p.clock === 'timestamp-query'
      ? 'GPU timestamps (timestamp-query), one compute pass per kernel'
      : 'wall clock (this adapter has no timestamp-query): each kernel replayed alone, submit to done, so launch overhead is included';
  const lines = [
    `kiln profile ${p.model}  input [${p.input.join(',')}]  adapter: ${p.adapter}`,
    `clock: ${clock}; median of ${p.iters} forwards after ${p.warmup} warm-up`,
  ];
  for (const mode of ['compiled', 'eager'] as const) {
    const m = p.modes[mode];
    if (!m) continue;
    lines.push('', `${mode}: ${m.kernels.length} ${mode === 'eager' ? 'ops' : 'kernels'}, GPU time per forward ${us(m.totalUs)} µs (median; the kernels' medians sum to ${us(m.kernelMediansUs)} µs)`);
    lines.push(...table(['id', 'op', 'loc', 'median µs', 'share'], m.kernels.map((k) => [k.id, k.op, k.loc, us(k.medianUs), `${(k.share * 100).toFixed(1)}%`]), [true, false, false, true, true]));
  }
  const shown = (['eager', 'compiled'] as const).filter((mode) => p.modes[mode]);
  const ops = [...new Set(shown.flatMap((mode) => Object.keys(p.modes[mode]!.byOp)))];
  const total = (op: string) => Math.max(...shown.map((mode) => p.modes[mode]!.byOp[op]?.us ?? 0));
  ops.sort((a, b) => total(b) - total(a));
  const cell = (mode: Mode, op: string) => {
    const g = p.modes[mode]!.byOp[op];
    return g ? `${us(g.us)} (${g.count})` : '-';
  };
  lines.push('', 'by op kind (summed medians, count):');
  lines.push(...table(['op', ...shown.map((mode) => `${mode} µs`)], ops.map((op) => [op, ...shown.map((mode) => cell(mode, op))]), [false, ...shown.map(() => true)]));
  const totals = shown.map((mode) => `${mode} ${us(p.modes[mode]!.totalUs)} µs`).join(', ');
  const ratio = p.eagerOverCompiled !== undefined ? `; eager/compiled ${p.eagerOverCompiled.toFixed(2)}x` : '';
  lines.push('', `total GPU time per forward (median): ${totals}${ratio}`);
  return lines.join('\n');
}

/** Columns padded to their widest cell; `right` marks the numeric ones. */
function table(header: readonly string[], rows: readonly (readonly string[])[], right: readonly boolean[]): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: readonly string[]) => '  ' + cells.map((x, c) => (right[c] ? x.padStart(widths[c]) : x.padEnd(widths[c]))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}
