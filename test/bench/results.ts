// What a benchmark run produces (the JSON that `--json` writes and report.ts reads) and how a case
// reads as a table: every variant's median set against the case's first variant, kiln's own.

import { formatBytes } from '../../runtime/webgpu/buffers.ts';
import type { Timing } from './measure.ts';

export interface VariantResult {
  readonly name: string;
  /** Set on another framework's variants (the peers); kiln's own leave it out. */
  readonly peer?: boolean;
  /** Absent when the variant could not run; `failed` says why. */
  readonly timing?: Timing;
  readonly failed?: string;
  /** e.g. TFLOP/s for matmul */
  readonly rate?: string;
  readonly kernels?: number;
  /** Most GPU bytes kiln held at once for this variant (kiln's variants only). */
  readonly peakBytes?: number;
  /** How a peer's output compared with kiln's, e.g. `max |diff| 2.4e-7` or `WRONG: ...`. */
  readonly check?: string;
}

export interface CaseResult {
  readonly suite: string;
  readonly name: string;
  readonly variants: VariantResult[];
}

export interface BenchReport {
  readonly date: string;
  readonly adapter: string;
  readonly smoke: boolean;
  readonly node: string;
  /** The peers that loaded, with their versions where they tell, e.g. `onnxruntime-web 1.30.0`. */
  readonly peers: string[];
  readonly results: CaseResult[];
}

/** The variant every other is compared with: the first that ran (the suites put kiln's first). */
export function baselineOf(c: CaseResult): VariantResult | undefined {
  return c.variants.find((v) => v.timing);
}

/** A variant's median over the baseline's: 2.00 means it takes twice as long. */
export function ratioOf(c: CaseResult, v: VariantResult): number | undefined {
  const base = baselineOf(c)?.timing;
  return base && v.timing ? v.timing.medianMs / base.medianMs : undefined;
}

/** FLOPs per run over a median time, in the unit that keeps the number readable. */
export function formatRate(flops: number, ms: number): string {
  const perSecond = flops / (ms * 1e-3);
  return perSecond >= 1e12 ? `${(perSecond / 1e12).toFixed(2)} TFLOP/s` : `${(perSecond / 1e9).toFixed(3)} GFLOP/s`;
}

/** The column names of a case's table; the ratio column names the case's baseline. */
export function tableHeader(c: CaseResult): string[] {
  return ['variant', 'median ms', 'p10-p90 ms', `time / ${baselineOf(c)?.name ?? 'baseline'}`, 'rate', 'kernels', 'peak GPU', 'notes'];
}

/** One row of cells per variant, in tableHeader's order; a variant that failed says so in its notes. */
export function caseRows(c: CaseResult): string[][] {
  return c.variants.map((v) => {
    const t = v.timing;
    const ratio = ratioOf(c, v);
    return [
      v.name,
      t ? t.medianMs.toFixed(3) : '-',
      t ? `${t.p10Ms.toFixed(3)}-${t.p90Ms.toFixed(3)}` : '-',
      ratio === undefined ? '-' : `${ratio.toFixed(2)}x`,
      v.rate ?? '',
      v.kernels === undefined ? '' : String(v.kernels),
      v.peakBytes === undefined ? '' : formatBytes(v.peakBytes),
      v.failed ? `failed: ${v.failed}` : (v.check ?? ''),
    ];
  });
}

/** A case as an aligned plain-text table, for the terminal. */
export function formatCase(c: CaseResult): string {
  const rows = [tableHeader(c), ...caseRows(c)];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((cell, i) => (i === 0 || i === r.length - 1 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd());
  return [c.name, ...lines.map((l) => `  ${l}`)].join('\n');
}

/** The first line of an error's message: what the table and the JSON say for a variant that failed. */
export function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return (text.split('\n').find((l) => l.trim()) ?? 'unknown error').trim().slice(0, 200);
}

/** The value after `--name` in a command line, if the flag is there. */
export function flagValue(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}
