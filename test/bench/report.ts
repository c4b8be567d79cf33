// BENCHMARKS.md from a benchmark run: `npm run bench:report -- RESULT.json [MORE.json ...] [--torch TORCH.json ...] [--out BENCHMARKS.md] [--json MERGED.json]`
// (several RESULT files, e.g. one per suite from separate device commands of one session, are joined in order).
// One table per case (the same rows the bench prints), the adapter and date, and a bar chart drawn
// as plain SVG (bench/chart.svg beside the markdown): one group of bars per case, each bar a variant's
// median as a share of the case's slowest, kiln's f32 and f16 variants, the peers' and PyTorch's each in
// their colour. `--torch` merges the records of PyTorch run in the same GPU call (torch_anchor.py of
// ../shared/device, torch_cases.py here) into the cases of the same suite and title, so the tables
// show kiln f16 against torch f16 beside kiln f16 against kiln f32.

import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { writeFileAtomic } from '../../runtime/files.ts';
import { type BenchReport, type CaseResult, type TorchInfo, type VariantResult, caseRows, dtypeInName, dtypeOf, flagValue, ratioOf, tableHeader } from './results.ts';

const KILN_COLOUR = '#d95f02';
const KILN_F16_COLOUR = '#e6ab02';
const PEER_COLOUR = '#7570b3';
const TORCH_COLOUR = '#1b9e77';

/** One record of torch_anchor.py's or torch_cases.py's JSON: a time in ms (a CUDA-event mean), or null and `extra.error`. */
export interface TorchRecord {
  readonly suite: string;
  readonly case: string;
  readonly variant: string;
  readonly ms: number | null;
  readonly extra?: Record<string, unknown>;
}

export interface TorchRun {
  readonly info: TorchInfo;
  readonly records: TorchRecord[];
}

/** A torch record as a row of its case: a peer whose time is a mean (no spread), with its extras (TFLOP/s, peak MiB) in the notes. */
function torchVariant(r: TorchRecord): VariantResult {
  const { error, tflops, ...rest } = r.extra ?? {};
  const notes = Object.entries(rest).map(([k, v]) => `${k} ${String(v)}`).join(', ');
  const dtype = dtypeInName(r.variant);
  return {
    name: r.variant,
    peer: true,
    source: 'torch',
    ...(dtype ? { dtype } : {}),
    ...(r.ms === null ? { failed: String(error ?? 'no time') } : { timing: { medianMs: r.ms, p10Ms: r.ms, p90Ms: r.ms, batches: 1, runsPerBatch: 1 } }),
    ...(tflops !== undefined ? { rate: `${String(tflops)} TFLOP/s` } : {}),
    ...(notes ? { check: notes } : {}),
  };
}

/**
 * kiln's report with PyTorch's records added: each joins the case of the same suite and title as one more
 * row (a case only PyTorch has becomes a case of its own, after kiln's of its suite); the report lists
 * each run's torch version, GPU and date.
 */
export function mergeTorch(report: BenchReport, runs: readonly TorchRun[]): BenchReport {
  const results: CaseResult[] = report.results.map((c) => ({ ...c, variants: [...c.variants] }));
  for (const run of runs) {
    for (const r of run.records) {
      let c = results.find((x) => x.suite === r.suite && x.name === r.case);
      if (!c) {
        c = { suite: r.suite, name: r.case, variants: [] };
        const lastOfSuite = results.map((x) => x.suite).lastIndexOf(r.suite);
        results.splice(lastOfSuite < 0 ? results.length : lastOfSuite + 1, 0, c);
      }
      c.variants.push(torchVariant(r));
    }
  }
  return { ...report, torch: [...(report.torch ?? []), ...runs.map((r) => r.info)], results };
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** The chart: a title line per case, then a bar per variant, labelled with its median and ratio. */
export function renderChart(report: BenchReport): string {
  const width = 960;
  const labelWidth = 360;
  const barWidth = 400;
  const row = 20;
  const parts: string[] = [];
  let y = 30;
  for (const c of report.results) {
    parts.push(`<text x="8" y="${y}" font-weight="bold">${escapeXml(c.name)}</text>`);
    y += 8;
    const slowest = Math.max(...c.variants.map((v) => v.timing?.medianMs ?? 0));
    for (const v of c.variants) {
      const top = y + 4;
      parts.push(`<text x="16" y="${top + 13}">${escapeXml(v.name)}</text>`);
      if (v.timing && slowest > 0) {
        const w = Math.max(1, (v.timing.medianMs / slowest) * barWidth);
        const ratio = ratioOf(c, v);
        const label = `${v.timing.medianMs.toPrecision(3)} ms${ratio === undefined ? '' : `  ${ratio.toFixed(2)}x`}`;
        const colour = v.source === 'torch' ? TORCH_COLOUR : v.peer ? PEER_COLOUR : dtypeOf(v) === 'f16' ? KILN_F16_COLOUR : KILN_COLOUR;
        parts.push(`<rect x="${labelWidth}" y="${top + 2}" width="${w.toFixed(1)}" height="${row - 6}" fill="${colour}"/>`);
        parts.push(`<text x="${labelWidth + w + 6}" y="${top + 13}">${escapeXml(label)}</text>`);
      } else {
        parts.push(`<text x="${labelWidth}" y="${top + 13}" fill="#999">${escapeXml(v.failed ? `failed: ${v.failed}` : v.skipped ? `skipped: ${v.skipped}` : 'no time')}</text>`);
      }
      y += row;
    }
    y += 28;
  }
  const keys: [string, string][] = [[KILN_COLOUR, 'kiln f32'], [KILN_F16_COLOUR, 'kiln f16'], [PEER_COLOUR, 'peers'], [TORCH_COLOUR, 'PyTorch']];
  const legend = [
    ...keys.map(([colour, label], i) => `<rect x="${16 + i * 90}" y="${y}" width="12" height="12" fill="${colour}"/><text x="${34 + i * 90}" y="${y + 11}">${label}</text>`),
    `<text x="${labelWidth + 16}" y="${y + 11}" fill="#555">median ms per run (shorter is faster); ratio to each case's first variant</text>`,
  ];
  const height = y + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...parts,
    ...legend,
    '</svg>',
    '',
  ].join('\n');
}

function markdownTable(c: CaseResult): string[] {
  const header = tableHeader(c);
  const align = header.map((_, i) => (i === 0 || i === header.length - 1 ? '---' : '---:'));
  return [header, align, ...caseRows(c)].map((cells) => `| ${cells.map(escapeCell).join(' | ')} |`);
}

/** The markdown: where and when it was measured, how to read it, the chart, then a table per case by suite. */
export function renderMarkdown(report: BenchReport, chartPath: string): string {
  const lines = [
    '# kiln benchmarks',
    '',
    `Measured ${report.date} on **${report.adapter}** (Node ${report.node})${report.smoke ? ', smoke sizes: these times say nothing about speed' : ''}.`,
    `Peers in the same run: ${report.peers.length ? report.peers.join(', ') : 'none loaded'}.`,
    ...(report.f16 === false ? ['The adapter has no shader-f16: the f16 variants were skipped.'] : []),
    ...(report.torch?.length ? [`PyTorch in the same GPU call: ${report.torch.map((t) => `torch ${t.torch} on ${t.gpu} (${t.date})`).join('; ')}.`] : []),
    '',
    'Each time is the median over batches of back-to-back runs on GPU-resident inputs, each batch timed until the queue',
    'is idle; p10-p90 is the spread over batches. "time / X" divides by the case\'s first variant, measured in the same',
    "run. Every kiln variant runs in f32 and in f16 (f16 inputs, or autocast for the models), its name ending with the",
    'dtype; "f16 / f32" divides an f16 variant\'s time by its f32 counterpart\'s, measured in the same process. Peak GPU is',
    "the most memory kiln's buffers held at once for that variant; min traffic is the least bytes a run moves (inputs",
    "read and output written once, at the dtype's bytes per element) over its median. A peer's notes compare its output",
    "with kiln's (same inputs); an f16 variant's compare its output with its f32 counterpart's; a variant that could not",
    'run says why. PyTorch\'s rows are CUDA-event means (no spread) from the same GPU call; "time / fastest torch" divides',
    "a kiln variant's time by PyTorch's fastest of the same dtype in that case, and \"f16 time / fastest torch bf16\" a kiln",
    "f16 variant's by PyTorch's fastest bf16 (kiln has no bf16; PyTorch's mixed precision default is bf16 autocast).",
    '',
    `![median time per variant](${chartPath})`,
    '',
  ];
  for (const suite of [...new Set(report.results.map((c) => c.suite))]) {
    lines.push(`## ${suite}`, '');
    for (const c of report.results.filter((x) => x.suite === suite)) lines.push(`### ${c.name}`, '', ...markdownTable(c), '');
  }
  lines.push(`Generated by \`npm run bench:report\` from the bench's JSON; regenerate it rather than editing by hand.`, '');
  return lines.join('\n');
}

/**
 * Several bench runs as one report, their cases in order: the first run's date, every adapter (one when
 * they agree), the peers of any, smoke if any was.
 */
export function joinReports(reports: readonly BenchReport[]): BenchReport {
  if (reports.length === 1) return reports[0];
  const adapters = [...new Set(reports.map((r) => r.adapter))];
  const f16 = reports.every((r) => r.f16 !== undefined) ? reports.every((r) => r.f16) : undefined;
  return {
    date: reports[0].date,
    adapter: adapters.join('; '),
    ...(f16 === undefined ? {} : { f16 }),
    smoke: reports.some((r) => r.smoke),
    node: reports[0].node,
    peers: [...new Set(reports.flatMap((r) => r.peers))],
    ...(reports.some((r) => r.torch) ? { torch: reports.flatMap((r) => r.torch ?? []) } : {}),
    results: reports.flatMap((r) => r.results),
  };
}

/**
 * Reads a bench JSON (and PyTorch's, merged in) and writes the markdown and, beside it, bench/chart.svg;
 * `mergedJson` also keeps the merged report. Returns the paths written.
 */
export async function writeReport(jsonPath: string | readonly string[], out = 'BENCHMARKS.md', torchPaths: readonly string[] = [], mergedJson?: string): Promise<{ markdown: string; chart: string }> {
  const kiln = joinReports((typeof jsonPath === 'string' ? [jsonPath] : jsonPath).map((p) => JSON.parse(readFileSync(p, 'utf8')) as BenchReport));
  const report = torchPaths.length ? mergeTorch(kiln, torchPaths.map((p) => JSON.parse(readFileSync(p, 'utf8')) as TorchRun)) : kiln;
  if (mergedJson) {
    mkdirSync(dirname(mergedJson), { recursive: true });
    await writeFileAtomic(mergedJson, JSON.stringify(report, null, 2) + '\n');
  }
  const chart = join(dirname(out), 'bench', 'chart.svg');
  mkdirSync(dirname(chart), { recursive: true });
  await writeFileAtomic(chart, renderChart(report));
  await writeFileAtomic(out, renderMarkdown(report, relative(dirname(out), chart)));
  return { markdown: out, chart };
}

if (process.argv[1] && /report\.(ts|mjs)$/.test(process.argv[1])) {
  const argv = process.argv.slice(2);
  const json = argv.filter((a, i) => !a.startsWith('--') && !(argv[i - 1] ?? '').startsWith('--'));
  if (json.length === 0) {
    console.error('usage: npm run bench:report -- RESULT.json [MORE.json ...] [--torch TORCH.json ...] [--out BENCHMARKS.md] [--json MERGED.json]');
    process.exit(2);
  }
  const torch = argv.flatMap((a, i) => (a === '--torch' && argv[i + 1] ? [argv[i + 1]] : []));
  const written = await writeReport(json, flagValue(argv, 'out'), torch, flagValue(argv, 'json'));
  console.log(`wrote ${written.markdown} and ${written.chart}`);
}
