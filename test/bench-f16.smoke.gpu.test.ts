// The benchmark's f16 variants end to end at smoke sizes on lavapipe (shader-f16): every f16 variant of
// every case (attention fused, masked and unfused, forward and backward; matmul; nanoGPT's forward under
// autocast and model.half(); training steps under autocast with loss scaling; generation) runs beside its f32
// counterpart in the same process, its output checked against the f32 one, its bytes counted at 2 per
// element, and report.ts shows the f16 / f32 ratios and, with PyTorch's records merged in, kiln f16
// against torch f16 (and bf16). bench.smoke.gpu.test.ts runs the same suites on SwiftShader, where they are skipped.
// Peers (f32 only) are left out: bench.smoke.gpu.test.ts runs them. The times mean nothing here.

import { HAS_LAVAPIPE } from './lavapipe.ts';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BenchReport, main } from './bench/bench.ts';
import { attentionGraph, minTraffic, productGraph } from './bench/kiln-cases.ts';
import { type TorchRun, joinReports, writeReport } from './bench/report.ts';
import { type CaseResult, type VariantResult, f16Ratio } from './bench/results.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-f16-'));
const json = join(dir, 'bench.json');
let report: BenchReport;

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every case's f16 variants of kiln, with the case. */
const f16Variants = (): [CaseResult, VariantResult][] => report.results.flatMap((c) => c.variants.filter((v) => !v.peer && v.dtype === 'f16').map((v): [CaseResult, VariantResult] => [c, v]));

/** The relative difference a check note reports, and its tolerance when it has one. */
function checkNumbers(check: string): { diff: number; tolerance?: number } {
  const m = /max \|diff\| vs f32 (\S+) of .*?(?:\(tolerance (\S+)\))?$/.exec(check);
  if (!m) throw new Error(`not a check note: ${check}`);
  return { diff: Number(m[1]), ...(m[2] ? { tolerance: Number(m[2]) } : {}) };
}

describe.skipIf(!HAS_LAVAPIPE)('npm run bench -- --suite all --smoke --no-peers, on lavapipe (f16)', () => {
  beforeAll(async () => {
    report = await main(['--suite', 'all', '--smoke', '--no-peers', '--json', json]);
  }, 600_000); // lavapipe compiles every f16 and f32 kernel of the four suites, the training steps eight times

  it('runs on an adapter with shader-f16', () => {
    expect(report.f16).toBe(true);
    expect(report.adapter).toMatch(/llvmpipe/);
  });

  it('runs every f16 variant of every case to a positive median, beside an f32 counterpart that ran', () => {
    const names = report.results.map((c) => [c.suite, c.variants.filter((v) => v.dtype === 'f16').map((v) => v.name)]);
    expect(names).toEqual([
      ['attention', ['kiln fused f16', 'kiln fused masked f16', 'kiln unfused f16']],
      ['attention', ['kiln flash backward f16', 'kiln composed backward f16']],
      ['matmul', ['kiln f16']],
      ['matmul', ['kiln f16']],
      ['nanogpt', ['compiled manual, fused, autocast f16', 'compiled sdpa, fused, autocast f16', 'compiled manual, unfused, autocast f16', 'compiled manual, fused, model.half() f16']],
      ['train', ['train step manual, fused f16', 'train step sdpa, fused f16', 'train step manual, unfused f16', 'train step sdpa, unfused f16']],
      ['generate', ['kiln generate cached f16', 'kiln generate cached, static f16', 'kiln generate no cache f16']],
      ['generate', ['kiln generate cached f16', 'kiln generate cached, static f16', 'kiln generate no cache f16']],
    ]);
    for (const [c, v] of f16Variants()) {
      expect([v.failed, v.skipped], `${c.name}: ${v.name}`).toEqual([undefined, undefined]);
      expect(v.timing!.medianMs, `${c.name}: ${v.name}`).toBeGreaterThan(0);
      const f32 = c.variants.find((x) => x.name === v.f32Variant);
      expect(f32?.dtype, `${c.name}: ${v.name}`).toBe('f32');
      expect(f32!.timing!.medianMs).toBeGreaterThan(0);
      expect(f16Ratio(c, v)).toBeCloseTo(v.timing!.medianMs / f32!.timing!.medianMs, 12);
    }
  });

  it("gives each f16 output a finite difference from its f32 counterpart's, within the derived tolerance where there is one", () => {
    const worst = new Map<string, { diff: number; tolerance?: number }>();
    for (const [c, v] of f16Variants()) {
      expect(v.check, `${c.name}: ${v.name}`).toBeDefined();
      expect(v.check!, `${c.name}: ${v.name}`).not.toMatch(/^WRONG/);
      const n = checkNumbers(v.check!);
      expect(Number.isFinite(n.diff), `${c.name}: ${v.name}: ${v.check}`).toBe(true);
      if (n.tolerance !== undefined) expect(n.diff, `${c.name}: ${v.name}`).toBeLessThanOrEqual(n.tolerance);
      const key = `${c.suite}: ${v.name}`;
      if (!(worst.get(key)?.diff! >= n.diff)) worst.set(key, n);
    }
    // Forward attention and matmul carry a tolerance derived from u = 2^-11 (bench.ts says how); the rest report only.
    const withTolerance = [...worst].filter(([, n]) => n.tolerance !== undefined).map(([k]) => k);
    expect(withTolerance).toEqual(['attention: kiln fused f16', 'attention: kiln fused masked f16', 'attention: kiln unfused f16', 'matmul: kiln f16']);
    console.log([...worst].map(([k, n]) => `${k}: ${n.diff.toExponential(1)}${n.tolerance === undefined ? '' : ` (tolerance ${n.tolerance.toExponential(1)})`}`).join('\n'));
  });

  it('counts f16 at 2 bytes an element: half the peak GPU bytes of f32 for attention and matmul, half the least traffic', () => {
    const peak = (suite: string, name: string) => report.results.find((c) => c.suite === suite)!.variants.find((v) => v.name === name)!.peakBytes!;
    // q, k, v and y of [1,2,16,8] (4 KiB in f32); a, b and c of 64^2 (48 KiB in f32)
    expect([peak('attention', 'kiln fused f32'), peak('attention', 'kiln fused f16')]).toEqual([4096, 2048]);
    expect([peak('matmul', 'kiln f32'), peak('matmul', 'kiln f16')]).toEqual([49152, 24576]);
    expect(minTraffic(attentionGraph(12, 12, 1024, 64, 'fused', 'f16'))).toBe(minTraffic(attentionGraph(12, 12, 1024, 64, 'fused', 'f32')) / 2);
    expect(minTraffic(productGraph([4096, 4096], [4096, 4096], true, 'f16'))).toBe(3 * 4096 * 4096 * 2);
  });

  it("writes BENCHMARKS.md with f16 / f32 ratios, and with PyTorch's records merged, kiln f16 against torch f16", async () => {
    const attention = report.results[0];
    const fused16 = attention.variants.find((v) => v.name === 'kiln fused f16')!;
    // PyTorch's JSON as torch_anchor.py writes it, for this case's title (a failed record says why).
    const torch: TorchRun = {
      info: { torch: '2.x', gpu: 'test', date: '2026-01-01T00:00:00Z' },
      records: [
        { suite: 'attention', case: attention.name, variant: 'torch manual f16', ms: 4 * fused16.timing!.medianMs, extra: {} },
        { suite: 'attention', case: attention.name, variant: 'torch sdpa flash f16', ms: fused16.timing!.medianMs / 2, extra: {} },
        { suite: 'attention', case: attention.name, variant: 'torch sdpa flash f32', ms: null, extra: { error: 'No available kernel' } },
        { suite: 'attention', case: attention.name, variant: 'torch sdpa flash bf16', ms: fused16.timing!.medianMs / 4, extra: {} },
        { suite: 'generate', case: 'GPT-2 124M generate B1 prompt 128 new 256', variant: 'transformers generate f16', ms: 3, extra: { decode_tokens_per_s: 300 } },
      ],
    };
    const torchJson = join(dir, 'torch.json');
    writeFileSync(torchJson, JSON.stringify(torch));
    const out = await writeReport(json, join(dir, 'BENCHMARKS.md'), [torchJson], join(dir, 'merged.json'));
    const markdown = readFileSync(out.markdown, 'utf8');
    const cells = (line: string) => line.slice(2, -2).split(' | ');
    const row = (name: string) => cells(markdown.split('\n').find((l) => l.startsWith(`| ${name} |`))!);
    const header = cells(markdown.split('\n').find((l) => l.startsWith('| variant |') && l.includes('fastest torch'))!);
    const cell = (name: string, column: string) => row(name)[header.indexOf(column)];
    expect(cell('kiln fused f16', 'f16 / f32')).toBe(`${f16Ratio(attention, fused16)!.toFixed(2)}x`);
    expect(cell('kiln fused f16', 'time / fastest torch (same dtype)')).toBe('2.00x (torch sdpa flash f16)');
    expect(cell('kiln fused f32', 'time / fastest torch (same dtype)')).toBe(''); // PyTorch's f32 record failed
    expect(cell('kiln fused f16', 'f16 time / fastest torch bf16')).toBe('4.00x (torch sdpa flash bf16)'); // kiln has no bf16
    expect(cell('kiln fused f32', 'f16 time / fastest torch bf16')).toBe('');
    expect(cell('torch sdpa flash f32', 'notes')).toBe('failed: No available kernel');
    expect(markdown).toContain('PyTorch in the same GPU call: torch 2.x on test');
    expect(markdown).toContain('### GPT-2 124M generate B1 prompt 128 new 256');
    // Runs of one session, one suite per device command, join in order before the merge.
    const train = { ...report, date: 'later', results: report.results.filter((c) => c.suite === 'train') };
    const joined = joinReports([{ ...report, results: report.results.filter((c) => c.suite !== 'train') }, train]);
    const inOrder = [...report.results.filter((c) => c.suite !== 'train'), ...train.results].map((c) => c.name);
    expect([joined.date, joined.adapter, joined.f16, joined.results.map((c) => c.name)]).toEqual([report.date, report.adapter, true, inOrder]);
    const merged = JSON.parse(readFileSync(join(dir, 'merged.json'), 'utf8')) as BenchReport;
    expect(merged.results[0].variants.filter((v) => v.source === 'torch').map((v) => [v.name, v.dtype])).toEqual([
      ['torch manual f16', 'f16'], ['torch sdpa flash f16', 'f16'], ['torch sdpa flash f32', 'f32'], ['torch sdpa flash bf16', 'bf16'],
    ]);
  });
});
