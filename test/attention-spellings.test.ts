// Attention spellings are model code traced into patterns: the generated file is what the spellings
// trace to today, and each spelling, written as a model, is fused by its own rule.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { attentionPatternsFile, attentionSpellings } from '../compiler/attention-spellings.ts';
import { tensor } from '../compiler/frontend/create.ts';
import { Module } from '../compiler/frontend/module.ts';
import type { Tensor } from '../compiler/frontend/tensor.ts';
import { traceModule } from '../compiler/tracer.ts';
import type { DType } from '../ir/types.ts';
import { DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';

describe('attention spellings', () => {
  it('passes/attention-patterns.generated.ts is what the spellings trace to (else: npm run gen:attention-patterns)', () => {
    const stored = readFileSync(new URL('../passes/attention-patterns.generated.ts', import.meta.url), 'utf8');
    expect(stored).toBe(attentionPatternsFile());
  });

  for (const spelling of attentionSpellings()) {
    it(`${spelling.name}, written in a model, becomes one fused_attention by rule ${spelling.family}`, () => {
      const zeros = (shape: number[], dtype: DType) => tensor(new Array(shape.reduce((a, b) => a * b, 1)).fill(0), shape, dtype);
      class Attention extends Module {
        forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor): Tensor {
          return spelling.fn({ q, k, v, mask }, { scale: 0.35, qScale: 0.6, kScale: 0.6, fill: -Infinity });
        }
      }
      const model = new Attention();
      const args = [zeros([2, 2, 4, 8], 'f32'), zeros([2, 2, 4, 8], 'f32'), zeros([2, 2, 4, 8], 'f32'), zeros([4, 4], spelling.maskDtype)];
      const passes = runPasses(traceModule(model, args).graph, DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered'));
      expect(passes.graph.nodesOf('fused_attention')).toHaveLength(1);
      expect(passes.decisions.filter((d) => d.applied).map((d) => d.rule)).toEqual([spelling.family]);
    });
  }
});
