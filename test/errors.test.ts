// The catalog of kiln's errors: for every code in ir/errors.ts, the way a user meets it and the exact
// one-line message they read, naming their file and line where there is one. Other tests check the
// many ways into each code; this file pins one message per code, and keeps docs/errors.md in step.
// The codes met on a WebGPU device (E008 to E010): errors.gpu.test.ts.

import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../compiler/cli/model.ts';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { compile, tensor } from '../index.ts';
import { ERROR_CODES } from '../ir/errors.ts';
import { allOps } from '../ir/registry.ts';
import { parseGraph } from '../ir/text.ts';
import { verifyGraph } from '../ir/verify.ts';
import { writeSafetensors } from '../runtime/safetensors.ts';
import * as nanogpt from '../examples/nanogpt/model.ts';
import { CATALOG, FIXTURE_EXPECTED, FIXTURE_WEIGHTS, NANOGPT, ROOT, TINY, caught, kiln, locOf } from './error-catalog.ts';
import { BadView, BranchOnValue, FloatMask } from './fixtures/errors/models.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-errors-'));

describe('the error catalog', () => {
  it('has one case per code in ir/errors.ts, and docs/errors.md one row per code with its meaning', () => {
    expect(Object.keys(CATALOG).sort()).toEqual(Object.keys(ERROR_CODES).sort());
    const docs = readFileSync(join(ROOT, 'docs/errors.md'), 'utf8');
    const rows = [...docs.matchAll(/^\| `(KILN_E\d+)` \| ([^|]+) \|/gm)].map((m) => [m[1], m[2].trim()]);
    expect(rows).toEqual(Object.entries(ERROR_CODES));
  });
});

describe('each code, met as a user meets it, gives one exact line', () => {
  it(`KILN_E001 for ${CATALOG.KILN_E001}`, async () => {
    const message = await caught('KILN_E001', () => compile(new BadView(), { backend: 'cpu' })(tensor([1, 2, 3, 4, 5, 6], [2, 3])));
    expect(message).toBe('KILN_E001 test/fixtures/errors/models.ts:9:14: cannot reshape f32[2,3] to [5,5]: 6 elements vs 25');
  });

  it(`KILN_E002 for ${CATALOG.KILN_E002}`, async () => {
    const message = await caught('KILN_E002', () => compile(new FloatMask(), { backend: 'cpu' })(tensor([1, 2]), tensor([1, 0])));
    expect(message).toBe('KILN_E002 test/fixtures/errors/models.ts:16:14: masked_fill needs a bool mask, got f32[2]; compare it first (e.g. mask == 0)');
  });

  it(`KILN_E003 for ${CATALOG.KILN_E003}`, async () => {
    const message = await caught('KILN_E003', () => compile(new BranchOnValue(), { backend: 'cpu' })(tensor([1, 2])));
    expect(message).toBe(
      "KILN_E003 test/fixtures/errors/models.ts:23:12: using a tensor as a number reads a tensor's value while tracing (data-dependent control flow); compute it with tensor ops, or move it out of forward()",
    );
  });

  it(`KILN_E004 for ${CATALOG.KILN_E004}`, async () => {
    const text = ['%0 = input() {name="x"} : f32[2]', '%1 = softmx(%0) {dim=-1} : f32[2]  # model.ts:12:5  y = x.softmx(-1)', 'output y=%1'].join('\n');
    const message = await caught('KILN_E004', () => parseGraph(text));
    const known = allOps().map((op) => op.name).sort().join(', ');
    expect(message).toBe(`KILN_E004 model.ts:12:5: IR text line 2: unknown op "softmx" (did you mean softmax?); known ops: ${known}`);
  });

  it(`KILN_E005 for ${CATALOG.KILN_E005}`, async () => {
    const path = join(dir, 'model.pt');
    writeFileSync(path, Buffer.from('PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl', 'latin1')); // a zip's first bytes
    const message = await caught('KILN_E005', () => readCheckpoint(path));
    expect(message).toBe(`KILN_E005 bad checkpoint ${path}: header length 85966670672 exceeds the 100000000-byte limit; not a safetensors file`);
  });

  it(`KILN_E006 for ${CATALOG.KILN_E006}`, async () => {
    const message = await caught('KILN_E006', () => loadModel('run', nanogpt, NANOGPT, FIXTURE_WEIGHTS, '{"n_layer":1}'));
    expect(message).toBe(
      `KILN_E006 ${FIXTURE_WEIGHTS}: unexpected key "transformer.h.1.attn.c_attn.bias" (the model has no such parameter); is the config right?`,
    );
  });

  it(`KILN_E007 for ${CATALOG.KILN_E007}`, async () => {
    const r = await kiln(['run', NANOGPT, '--config', TINY, '--batch', '1', '--seq', '4'], { env: { VK_ICD_FILENAMES: '/nonexistent/icd.json' } });
    expect(r.code).toBe(1);
    expect(r.errors).toEqual([
      'KILN_E007 no WebGPU adapter found; for a software GPU: apt-get install chromium libvulkan1 (provides /usr/lib/chromium/vk_swiftshader_icd.json)',
    ]);
  });

  it(`KILN_E011 for ${CATALOG.KILN_E011}`, async () => {
    const config = TINY.replace('}', ',"dropout":1}');
    const r = await kiln(['run', NANOGPT, '--config', config, '--batch', '1', '--seq', '4', '--device', 'cpu']);
    expect(r.code).toBe(1);
    // At the line of model.ts that applies the dropout: x = this.transformer.drop.forward(...)
    expect(r.errors).toEqual([`KILN_E011 ${locOf(NANOGPT, 'drop.forward(', 'drop.'.length)}: dropout p must be in [0, 1), got 1`]);
  });

  it(`KILN_E012 for ${CATALOG.KILN_E012}`, async () => {
    const text = ['%0 = input() {name="x"} : f32[2,3]', '%1 = sum(%0) {dims=[-1], keepdim=false} : f32[2,3]  # model.ts:12:5  y = x.sum(-1)', 'output y=%1'].join('\n');
    const message = await caught('KILN_E012', () => verifyGraph(parseGraph(text), 'parsing'));
    expect(message).toBe(
      'KILN_E012 model.ts:12:5: IR invalid after parsing: recorded type f32[2,3] but the op gives f32[2], at %1 = sum(%0) {dims=[-1], keepdim=false} : f32[2,3]  # model.ts:12:5  y = x.sum(-1)',
    );
  });

  it(`KILN_E013 for ${CATALOG.KILN_E013}`, async () => {
    const message = await caught('KILN_E013', () => parseGraph('%0 = input() {name="x"} : f32[2]\n%1 = exp(%0) : f32[2\noutput y=%1'));
    expect(message).toBe('KILN_E013 IR text line 2, column 21: expected ",", found ""');
  });

  it(`KILN_E014 for ${CATALOG.KILN_E014}`, async () => {
    await writeSafetensors(join(dir, 'tokens.safetensors'), { tokens: { dtype: 'I32', shape: [1, 4], data: new Int32Array([1, 2, 3, 4]) } });
    const args = ['eval', join(ROOT, NANOGPT), '--weights', join(ROOT, FIXTURE_WEIGHTS), '--inputs', 'tokens.safetensors', '--out', 'out.safetensors', '--outputs', 'logits', '--device', 'cpu'];
    const r = await kiln(args, { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.errors).toEqual(["KILN_E014 tokens.safetensors has none of forward()'s inputs (idx, targets); it has tokens"]);
  });

  it(`KILN_E015 for ${CATALOG.KILN_E015}`, async () => {
    const r = await kiln(['run', NANOGPT, '--config', TINY, '--batch', '0']);
    expect(r.code).toBe(1);
    expect(r.errors).toEqual(['KILN_E015 kiln run: --batch must be a positive integer, got 0; see kiln run --help']);
  });

  it(`KILN_E016 for ${CATALOG.KILN_E016}`, async () => {
    writeFileSync(join(dir, 'broken.ts'), 'export default (config) => {\n  const n = config.n_embd;\n  return new GPT(config;\n};\n');
    const r = await kiln(['run', 'broken.ts'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.errors).toEqual(['KILN_E016 broken.ts:3:23: could not load broken.ts: Expected ")" but found ";"']);
  });

  it(`KILN_E017 for ${CATALOG.KILN_E017}`, async () => {
    copyFileSync(join(ROOT, FIXTURE_WEIGHTS), join(dir, 'w.safetensors')); // a copy: the fixture stays safe even if the check broke
    const args = ['eval', join(ROOT, NANOGPT), '--weights', 'w.safetensors', '--inputs', join(ROOT, FIXTURE_WEIGHTS), '--out', './w.safetensors', '--outputs', 'logits', '--device', 'cpu'];
    const r = await kiln(args, { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.errors).toEqual(['KILN_E017 kiln eval: --out ./w.safetensors is the same file as --weights w.safetensors, which it would overwrite; write to another path']);
    expect(readFileSync(join(dir, 'w.safetensors')).equals(readFileSync(join(ROOT, FIXTURE_WEIGHTS)))).toBe(true);
  });

  it(`KILN_E019 for ${CATALOG.KILN_E019}`, async () => {
    const args = ['eval', join(ROOT, NANOGPT), '--weights', join(ROOT, FIXTURE_WEIGHTS), '--inputs', join(ROOT, FIXTURE_EXPECTED), '--out', 'missing/out.safetensors', '--outputs', 'loss', '--device', 'cpu'];
    const r = await kiln(args, { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.errors).toEqual(['KILN_E019 missing/out.safetensors (--out): cannot open: no such file or directory (ENOENT); check that the path and its folder exist']);
  });

  it(`KILN_E020 for ${CATALOG.KILN_E020}`, async () => {
    const r = await kiln(['run', NANOGPT, '--config', TINY.replace('"n_head":1,"n_embd":8', '"n_head":2,"n_embd":15'), '--device', 'cpu']);
    expect(r.code).toBe(1);
    // The line of model.ts that throws, not kiln's own frames below it (the factory's caller, compiler/cli/model.ts).
    const [file, line] = locOf(NANOGPT, 'throw new Error(`n_embd').split(':');
    expect(r.errors).toEqual([`KILN_E020 ${file}:${line}: n_embd 15 is not a multiple of n_head 2`]);
  });
});
