// What a benchmark run produces (the JSON that `--json` writes and report.ts reads) and how a case
// reads as a table: every variant's median set against the case's first variant, kiln's own.

import { formatBytes } from '../../runtime/webgpu/buffers.ts';
import type { Timing } from './measure.ts';

/** The dtypes kiln's variants compute in: every case has an f32 and an f16 variant of each of kiln's kinds. */
export const BENCH_DTYPES = ['f32', 'f16'] as const;
export type BenchDtype = (typeof BENCH_DTYPES)[number];

/** What an f16 variant says where the device has no shader-f16 (SwiftShader): kiln would raise KILN_E021 there. */
export const NO_SHADER_F16 = 'device has no shader-f16 (KILN_E021)';

export interface VariantResult {
  /** Ends with the dtype it computes in: `kiln fused f16`, `tfjs-webgpu matMul f32`, `torch sdpa flash f16`. */
  readonly name: string;
  /** Set on another framework's variants (the peers, PyTorch); kiln's own leave it out. */
  readonly peer?: boolean;
  /** `torch`: a record of PyTorch in the same GPU call (torch_anchor.py, torch_cases.py), merged by report.ts. */
  readonly source?: 'torch';
  /**
   * The dtype it computes in: f32, f16 (f16 storage, or autocast: f16 matmuls and attention, f32 statistics), or
   * bf16 (PyTorch only). JSON written before the dtype dimension has none: f32.
   */
  readonly dtype?: string;
  /** An f16 variant's f32 counterpart in the same case (same kind, same process): the "f16 / f32" column divides by it. */
  readonly f32Variant?: string;
  /** Absent when the variant could not run; `failed` or `skipped` says why. */
  readonly timing?: Timing;
  readonly failed?: string;
  /** Why a variant was not run though nothing went wrong: e.g. an f16 variant on a device without shader-f16 (NO_SHADER_F16). */
  readonly skipped?: string;
  /** e.g. TFLOP/s for matmul */
  readonly rate?: string;
  /** The least memory traffic a run needs (inputs read once, output written once, at the dtype's bytes per element) over its median. */
  readonly bandwidth?: string;
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
  /** Whether the adapter offered shader-f16 (absent in JSON from before the dtype dimension). */
  readonly f16?: boolean;
  readonly smoke: boolean;
  readonly node: string;
  /** The peers that loaded, with their versions where they tell, e.g. `onnxruntime-web 1.30.0`. */
  readonly peers: string[];
  /** PyTorch's runs merged in by report.ts (`--torch`): version, GPU and date of each file. */
  readonly torch?: TorchInfo[];
  readonly results: CaseResult[];
}

/** What torch_anchor.py and torch_cases.py say about their run (their JSON's `info`). */
export interface TorchInfo {
  readonly torch: string;
  readonly gpu: string;
  readonly date: string;
}

/** The variant every other is compared with: the first of kiln's that ran (the suites put kiln's f32 first). */
export function baselineOf(c: CaseResult): VariantResult | undefined {
  return c.variants.find((v) => v.timing && !v.source) ?? c.variants.find((v) => v.timing);
}

/** The dtype a variant's name says (its last f32, f16 or bf16 word: `torch eager sdpa f16 dropout 0.2`), if any. */
export function dtypeInName(name: string): string | undefined {
  return name.match(/\b(f32|f16|bf16)\b/g)?.at(-1);
}

/** A variant's dtype: what it says, else what its name says, else f32 (JSON from before the dtype dimension). */
export function dtypeOf(v: VariantResult): string {
  return v.dtype ?? dtypeInName(v.name) ?? 'f32';
}

/** An f16 variant's median over its f32 counterpart's (same case, same process): 0.50 means f16 takes half the time. */
export function f16Ratio(c: CaseResult, v: VariantResult): number | undefined {
  const f32 = v.f32Variant === undefined ? undefined : c.variants.find((x) => x.name === v.f32Variant)?.timing;
  return f32 && v.timing ? v.timing.medianMs / f32.medianMs : undefined;
}

/** PyTorch's fastest variant of a dtype in a case (from the merged torch records), if it has one that ran. */
export function fastestTorch(c: CaseResult, dtype: string): VariantResult | undefined {
  const torch = c.variants.filter((v) => v.source === 'torch' && v.timing && dtypeOf(v) === dtype);
  return torch.sort((a, b) => a.timing!.medianMs - b.timing!.medianMs)[0];
}

/**
 * One of kiln's variants against PyTorch's fastest of a dtype (default its own) in the same GPU call: its
 * ratio and which it was. kiln has no bf16: its f16 variants are also set against PyTorch's bf16 autocast.
 */
export function torchRatio(c: CaseResult, v: VariantResult, dtype = dtypeOf(v)): { ratio: number; torch: VariantResult } | undefined {
  if (v.peer || !v.timing) return undefined;
  const torch = fastestTorch(c, dtype);
  return torch ? { ratio: v.timing.medianMs / torch.timing!.medianMs, torch } : undefined;
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

/** The columns a case's table has: "f16 / f32" where it has an f16 variant, "time / torch" where PyTorch's records were merged in. */
function columnsOf(c: CaseResult): { f16: boolean; torch: boolean; torchBf16: boolean; bandwidth: boolean } {
  return {
    f16: c.variants.some((v) => v.f32Variant !== undefined),
    torch: c.variants.some((v) => v.source === 'torch'),
    torchBf16: c.variants.some((v) => v.source === 'torch' && dtypeOf(v) === 'bf16') && c.variants.some((v) => !v.peer && dtypeOf(v) === 'f16'),
    bandwidth: c.variants.some((v) => v.bandwidth !== undefined),
  };
}

/** The column names of a case's table; the ratio column names the case's baseline. */
export function tableHeader(c: CaseResult): string[] {
  const cols = columnsOf(c);
  return [
    'variant', 'median ms', 'p10-p90 ms', `time / ${baselineOf(c)?.name ?? 'baseline'}`,
    ...(cols.f16 ? ['f16 / f32'] : []),
    ...(cols.torch ? ['time / fastest torch (same dtype)'] : []),
    ...(cols.torchBf16 ? ['f16 time / fastest torch bf16'] : []),
    'rate', ...(cols.bandwidth ? ['min traffic'] : []), 'kernels', 'peak GPU', 'notes',
  ];
}

/** Why a variant has no time, for its notes: failed or skipped, with the reason. */
function notesOf(v: VariantResult): string {
  if (v.failed) return `failed: ${v.failed}`;
  if (v.skipped) return `skipped: ${v.skipped}`;
  return v.check ?? '';
}

/** One row of cells per variant, in tableHeader's order; a variant that failed or was skipped says so in its notes. */
export function caseRows(c: CaseResult): string[][] {
  const cols = columnsOf(c);
  return c.variants.map((v) => {
    const t = v.timing;
    const ratio = ratioOf(c, v);
    const f16 = f16Ratio(c, v);
    const torch = torchRatio(c, v);
    const bf16 = dtypeOf(v) === 'f16' ? torchRatio(c, v, 'bf16') : undefined;
    // PyTorch's records are CUDA-event means over back-to-back runs: no spread over batches.
    const spread = t && v.source !== 'torch' ? `${t.p10Ms.toFixed(3)}-${t.p90Ms.toFixed(3)}` : '-';
    return [
      v.name,
      t ? t.medianMs.toFixed(3) : '-',
      spread,
      ratio === undefined ? '-' : `${ratio.toFixed(2)}x`,
      ...(cols.f16 ? [f16 === undefined ? (v.f32Variant === undefined ? '' : '-') : `${f16.toFixed(2)}x`] : []),
      ...(cols.torch ? [torch ? `${torch.ratio.toFixed(2)}x (${torch.torch.name})` : ''] : []),
      ...(cols.torchBf16 ? [bf16 ? `${bf16.ratio.toFixed(2)}x (${bf16.torch.name})` : ''] : []),
      v.rate ?? '',
      ...(cols.bandwidth ? [v.bandwidth ?? ''] : []),
      v.kernels === undefined ? '' : String(v.kernels),
      v.peakBytes === undefined ? '' : formatBytes(v.peakBytes),
      notesOf(v),
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

/** Bytes over a median time, as a rate: GB/s, or TB/s past 1000. */
export function formatBandwidth(bytes: number, ms: number): string {
  const perSecond = bytes / (ms * 1e-3);
  return perSecond >= 1e12 ? `${(perSecond / 1e12).toFixed(2)} TB/s` : `${(perSecond / 1e9).toFixed(2)} GB/s`;
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
