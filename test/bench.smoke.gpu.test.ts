// The benchmark at smoke sizes, in-process on whatever adapter there is (SwiftShader in CI): every suite
// runs, kiln's f32 variants all get a time, each has an f16 counterpart that ran or (no shader-f16 on
// SwiftShader) says it was skipped and why, each peer either ran (and agreed with kiln) or says why not,
// and the JSON it writes turns into BENCHMARKS.md and its chart. The times themselves mean nothing here.
// test/bench-f16.smoke.gpu.test.ts runs the f16 variants on lavapipe.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BenchReport, main } from './bench/bench.ts';
import { writeReport } from './bench/report.ts';
import { NO_SHADER_F16, dtypeOf } from './bench/results.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-bench-'));
const json = join(dir, 'bench.json');
let report: BenchReport;

beforeAll(async () => {
  report = await main(['--suite', 'all', '--smoke', '--json', json]);
}, 400_000); // the train suite compiles four training steps on SwiftShader

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('npm run bench -- --suite all --smoke', () => {
  it('runs every suite and names the adapter', () => {
    expect(new Set(report.results.map((c) => c.suite))).toEqual(new Set(['attention', 'matmul', 'nanogpt', 'train', 'generate']));
    expect(report.adapter).not.toBe('');
  });

  it("gives every kiln f32 variant of every case a positive median and a spread around it", () => {
    for (const c of report.results) {
      const kiln = c.variants.filter((v) => !v.peer && v.dtype === 'f32');
      expect(kiln.length, c.name).toBeGreaterThan(0);
      for (const v of kiln) {
        expect(v.failed, `${c.name}: ${v.name}`).toBeUndefined();
        expect(v.timing!.medianMs, `${c.name}: ${v.name}`).toBeGreaterThan(0);
        expect(v.timing!.p10Ms).toBeLessThanOrEqual(v.timing!.medianMs);
        expect(v.timing!.p90Ms).toBeGreaterThanOrEqual(v.timing!.medianMs);
      }
    }
  });

  it('names every variant with its dtype, and gives each kiln f32 variant an f16 one that ran or, without shader-f16, says it was skipped and why', () => {
    for (const c of report.results) {
      for (const v of c.variants) expect(v.name.endsWith(` ${dtypeOf(v)}`), `${c.name}: ${v.name}`).toBe(true);
      const kiln = c.variants.filter((v) => !v.peer);
      for (const f32 of kiln.filter((v) => v.dtype === 'f32')) {
        const f16 = kiln.filter((v) => v.dtype === 'f16' && v.f32Variant === f32.name);
        expect(f16.length, `${c.name}: ${f32.name}`).toBeGreaterThan(0);
        for (const v of f16) {
          expect(v.failed, `${c.name}: ${v.name}`).toBeUndefined();
          // SwiftShader has no shader-f16: listed, not dropped, and not failed
          if (report.f16) expect(v.timing, `${c.name}: ${v.name}`).toBeDefined();
          else expect([v.skipped, v.timing], `${c.name}: ${v.name}`).toEqual([NO_SHADER_F16, undefined]);
        }
      }
    }
  });

  it('reports generation with and without the KV cache: tokens per second and the kernels of one decode step', () => {
    const cases = report.results.filter((c) => c.suite === 'generate');
    expect(cases.map((c) => c.name)).toEqual(['tiny generate B1 prompt 4 new 8', 'tiny generate B2 prompt 4 new 8']);
    for (const c of cases) {
      const v = (name: string) => c.variants.find((x) => x.name === name)!;
      for (const name of ['kiln generate cached f32', 'kiln generate cached, static f32', 'kiln generate no cache f32']) {
        expect(v(name).rate, `${c.name}: ${name}`).toMatch(/^prefill \d+ tok\/s, decode \d+ tok\/s$/);
        expect(v(name).kernels, `${c.name}: ${name}`).toBeGreaterThan(0);
      }
      // One compiled decode graph serves the dynamic and the static generator alike.
      expect(v('kiln generate cached f32').kernels).toBe(v('kiln generate cached, static f32').kernels);
    }
  });

  it('reports peak GPU bytes for kiln fused and unfused attention, the unfused chain holding more', () => {
    const attention = report.results.find((c) => c.suite === 'attention')!;
    const peak = (name: string) => attention.variants.find((v) => v.name === name)!.peakBytes!;
    expect(peak('kiln fused f32')).toBeGreaterThan(0);
    expect(peak('kiln fused masked f32')).toBeGreaterThan(0);
    expect(peak('kiln unfused f32')).toBeGreaterThan(peak('kiln fused f32'));
  });

  it('runs each peer or says in one line why it could not, and a peer that ran agrees with kiln', () => {
    const peers = report.results.flatMap((c) => c.variants.filter((v) => v.peer));
    expect(peers.map((v) => v.name)).toEqual(
      expect.arrayContaining(['onnxruntime-web MultiHeadAttention (unidirectional) f32', 'tfjs-webgpu manual chain f32', 'jax-js dotProductAttention (jit, causal) f32', 'tfjs-webgpu matMul f32']),
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
    if (!report.f16) expect(markdown).toContain(`skipped: ${NO_SHADER_F16}`);
    const chart = readFileSync(out.chart, 'utf8');
    expect(chart).toMatch(/^<svg /);
    expect(chart.match(/<rect /g)!.length).toBeGreaterThanOrEqual(report.results.flatMap((c) => c.variants.filter((v) => v.timing)).length);
  });
});
