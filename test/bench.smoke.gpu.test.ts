// The benchmark at smoke sizes, in-process on whatever adapter there is (SwiftShader in CI): every suite
// runs, kiln's variants all get a time, each peer either ran (and agreed with kiln) or says why not,
// and the JSON it writes turns into BENCHMARKS.md and its chart. The times themselves mean nothing here.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BenchReport, main } from './bench/bench.ts';
import { writeReport } from './bench/report.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-'));
const json = join(dir, 'bench.json');
let report: BenchReport;

beforeAll(async () => {
  report = await main(['--suite', 'all', '--smoke', '--json', json]);
}, 400_000); // the train suite compiles four training steps on SwiftShader

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('npm run bench -- --suite all --smoke', () => {
  it('runs every suite and names the adapter', () => {
    expect(new Set(report.results.map((c) => c.suite))).toEqual(new Set(['attention', 'matmul', 'nanogpt', 'train']));
    expect(report.adapter).not.toBe('');
  });

  it("gives every kiln variant of every case a positive median and a spread around it", () => {
    for (const c of report.results) {
      const kiln = c.variants.filter((v) => !v.peer);
      expect(kiln.length, c.name).toBeGreaterThan(0);
      for (const v of kiln) {
        expect(v.failed, `${c.name}: ${v.name}`).toBeUndefined();
        expect(v.timing!.medianMs, `${c.name}: ${v.name}`).toBeGreaterThan(0);
        expect(v.timing!.p10Ms).toBeLessThanOrEqual(v.timing!.medianMs);
        expect(v.timing!.p90Ms).toBeGreaterThanOrEqual(v.timing!.medianMs);
      }
    }
  });

  it('reports peak GPU bytes for kiln fused and unfused attention, the unfused chain holding more', () => {
    const attention = report.results.find((c) => c.suite === 'attention')!;
    const peak = (name: string) => attention.variants.find((v) => v.name === name)!.peakBytes!;
    expect(peak('kiln fused')).toBeGreaterThan(0);
    expect(peak('kiln unfused')).toBeGreaterThan(peak('kiln fused'));
  });

  it('runs each peer or says in one line why it could not, and a peer that ran agrees with kiln', () => {
    const peers = report.results.flatMap((c) => c.variants.filter((v) => v.peer));
    expect(peers.map((v) => v.name)).toEqual(
      expect.arrayContaining(['onnxruntime-web MultiHeadAttention (unidirectional)', 'tfjs-webgpu manual chain', 'jax-js dotProductAttention (jit, causal)', 'tfjs-webgpu matMul']),
    );
    for (const v of peers) {
      if (v.failed !== undefined) expect(v.failed).not.toMatch(/\n/);
      else expect(v.check, v.name).toMatch(/^max \|diff\| vs kiln/);
    }
  });

  it('writes every number with the date and adapter to --json, and report.ts makes BENCHMARKS.md and the chart from it', async () => {
    const written = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
    expect(written).toEqual(JSON.parse(JSON.stringify(report)));
    expect(Date.parse(written.date)).not.toBeNaN();
    const out = await writeReport(json, join(dir, 'BENCHMARKS.md'));
    const markdown = readFileSync(out.markdown, 'utf8');
    expect(markdown).toContain(report.adapter);
    expect(markdown).toContain('![median time per variant](bench/chart.svg)');
    for (const c of report.results) expect(markdown).toContain(`### ${c.name}`);
    const chart = readFileSync(out.chart, 'utf8');
    expect(chart).toMatch(/^<svg /);
    expect(chart.match(/<rect /g)!.length).toBeGreaterThanOrEqual(report.results.flatMap((c) => c.variants.filter((v) => v.timing)).length);
  });
});
