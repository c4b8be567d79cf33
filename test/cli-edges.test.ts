// kiln's model commands at their edges (issue 14, section 5): a --config that does not fit the model,
// train.ts checkpoints as --weights, tied weights that disagree, sizes no array holds, files the system
// refuses, errors kiln did not raise, a boolean flag before MODEL.ts, and forward() parameters that
// bundling renames. Each refusal is exit status 1 and one coded line on stderr naming the user's key,
// flag or path.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileError } from '../compiler/cli/report.ts';
import { readCheckpoint } from '../compiler/checkpoint.ts';
import { KilnError } from '../ir/errors.ts';
import { tempName } from '../runtime/files.ts';
import { readSafetensors, writeSafetensors } from '../runtime/safetensors.ts';
import { main as train } from '../examples/nanogpt/train.ts';
import { Tensor } from '../compiler/frontend/tensor.ts';
import qkvModel from './fixtures/cli/qkv-model.ts';
import { NANOGPT, runNode } from './cli-capture.ts';
import { relError } from './helpers.ts';

const KILN = new URL('../bin/kiln.mjs', import.meta.url).pathname;
const QKV_MODEL = new URL('./fixtures/cli/qkv-model.ts', import.meta.url).pathname;
const TINY = '{"n_layer":1,"n_head":2,"n_embd":16,"block_size":16,"vocab_size":65}';
const dir = mkdtempSync(join(tmpdir(), 'kiln-cli-edges-'));
const ckpt = join(dir, 'ckpt.safetensors');
const tokens = join(dir, 'tokens.safetensors');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const kiln = (...args: string[]) => runNode([KILN, ...args]);

/** The one line a refusal printed, checked to be exit status 1 and that line alone on stderr. */
function refusal(r: { code: number; stderr: string }): string {
  expect(r.code).toBe(1);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0];
}

/** A copy of `src` with its tensors and metadata edited. */
async function edited(src: string, name: string, edit: (tensors: Map<string, { dtype: 'F32' | 'I32'; shape: number[]; data: Float32Array | Int32Array }>, metadata: Record<string, string>) => void): Promise<string> {
  const file = await readSafetensors(src);
  const tensors = new Map([...file.tensors].map(([k, t]) => [k, { dtype: t.dtype as 'F32' | 'I32', shape: [...t.shape], data: t.data as Float32Array | Int32Array }]));
  const metadata = { ...file.metadata };
  edit(tensors, metadata);
  const path = join(dir, name);
  await writeSafetensors(path, tensors, metadata);
  return path;
}

beforeAll(async () => {
  // a train.ts checkpoint of a tiny GPT (vocab 65, block 16), with AdamW's optim.* state
  await train(['--device', 'cpu', '--n_layer', '1', '--n_head', '2', '--n_embd', '16', '--block_size', '16', '--batch_size', '2', '--eval_iters', '1', '--max_iters', '0', '--out_dir', dir], () => undefined);
  await writeSafetensors(tokens, { idx: { dtype: 'I32', shape: [1, 8], data: new Int32Array([1, 2, 3, 4, 5, 6, 7, 8]) } });
}, 60_000);

describe('kiln --config is checked against MODEL.ts defaultConfig', () => {
  it('refuses a value of another type than the default, naming the key and the type (n_layer "two" built a model of no layers)', async () => {
    const line = refusal(await kiln('run', NANOGPT, '--config', '{"n_layer":"two"}', '--device', 'cpu'));
    expect(line).toBe('KILN_E015 kiln run: --config key "n_layer" must be a number (its default is 12), got "two"; see kiln run --help');
  });

  it('refuses an unknown key, listing the known ones', async () => {
    const line = refusal(await kiln('explain', NANOGPT, '--config', '{"n_layers":1}'));
    expect(line).toBe('KILN_E015 kiln explain: --config unknown key "n_layers"; the model\'s config has block_size, vocab_size, n_layer, n_head, n_embd, dropout, bias, flash, sdpa_mask; see kiln explain --help');
  });

  it("refuses a checkpoint whose __metadata__.config has a value of the wrong type, naming the file and the key", async () => {
    const bad = await edited(ckpt, 'bad-config.safetensors', (_, md) => (md.config = md.config.replace('"bias":false', '"bias":"no"')));
    const line = refusal(await kiln('dump', NANOGPT, '--weights', bad));
    expect(line).toBe(`KILN_E005 bad checkpoint ${bad}: __metadata__.config key "bias" must be true or false (its default is true), got "no"`);
  });
});

describe('kiln --weights with a train.ts checkpoint', () => {
  const commands: [string, string[]][] = [
    ['eval', ['--inputs', tokens, '--out', join(dir, 'out.safetensors'), '--outputs', 'logits', '--device', 'cpu']],
    ['run', ['--device', 'cpu', '--iters', '1', '--seq', '8']],
    ['explain', []],
    ['dump', ['--stage', 'traced']],
  ];
  for (const [command, extra] of commands) {
    it(`kiln ${command} loads the model and leaves the optimizer state out, with one note on stderr`, async () => {
      const optim = [...(await readSafetensors(ckpt)).tensors.keys()].filter((k) => k.startsWith('optim.')).length;
      expect(optim).toBeGreaterThan(0);
      const r = await kiln(command, NANOGPT, '--weights', ckpt, ...extra);
      expect(r.stderr).toBe(`note: ${ckpt} is a training checkpoint; its optimizer state (${optim} optim.* tensors) is ignored\n`);
      expect(r.code).toBe(0);
    });
  }

  it('refuses a tied lm_head.weight that differs from transformer.wte.weight', async () => {
    const tied = await edited(ckpt, 'tied.safetensors', (t) => {
      const wte = t.get('transformer.wte.weight')!;
      t.set('lm_head.weight', { ...wte, data: wte.data.map((x) => x + 1) });
    });
    const line = refusal(await kiln('run', NANOGPT, '--weights', tied, '--device', 'cpu'));
    expect(line).toBe(`KILN_E006 ${tied}: "lm_head.weight" differs from "transformer.wte.weight", which the model ties it to (one parameter, loaded once); keep one of the two keys, or untie them in the model`);
  });

  it('takes a tied lm_head.weight equal to transformer.wte.weight', async () => {
    const tied = await edited(ckpt, 'tied-same.safetensors', (t) => t.set('lm_head.weight', { ...t.get('transformer.wte.weight')! }));
    const r = await kiln('run', NANOGPT, '--weights', tied, '--device', 'cpu', '--iters', '1');
    expect(r.code).toBe(0);
  });
});

describe('errors kiln did not raise itself still get a code and name the user\'s flag or path', () => {
  it('an absurd --batch is KILN_E015 naming --batch and --seq (was "error: compiler/cli/model.ts:99: Invalid array length")', async () => {
    const line = refusal(await kiln('run', NANOGPT, '--config', TINY, '--device', 'cpu', '--batch', '1000000000'));
    expect(line).toMatch(/^KILN_E015 kiln run: --batch 1000000000 and --seq 16 make 16000000000 tokens, more than fit in memory \(.*\); see kiln run --help$/);
  });

  it('a --seq longer than the block_size is KILN_E015 before any array is made (a heap crash before)', async () => {
    const line = refusal(await kiln('run', NANOGPT, '--config', TINY, '--device', 'cpu', '--seq', '1000000000'));
    expect(line).toBe("KILN_E015 kiln run: --seq 1000000000 is longer than the config's block_size 16; see kiln run --help");
  });

  it('kiln dump --out under a file is KILN_E019 naming the path and --out', async () => {
    writeFileSync(join(dir, 'a-file'), '');
    const out = join(dir, 'a-file', 'g.txt');
    const line = refusal(await kiln('dump', NANOGPT, '--config', TINY, '--out', out));
    expect(line).toBe(`KILN_E019 ${out} (--out): cannot open: not a directory (ENOTDIR); a part of the path is a file, not a folder`);
  });

  it('the system errors no test can cause as root (EACCES, ENOSPC) name the path, and writeFileAtomic\'s temporary is named as the file it replaces', () => {
    const system = (code: string, syscall: string, message: string, path?: string) => Object.assign(new Error(message), { code, syscall, path });
    const full = fileError(system('ENOSPC', 'write', 'ENOSPC: no space left on device, write'), 'out/ckpt.safetensors', '--out_dir') as KilnError;
    expect(full.message).toBe('KILN_E019 out/ckpt.safetensors (--out_dir): cannot write: no space left on device (ENOSPC); free some disk space');
    const temp = join('/data/run', tempName('ckpt.safetensors'));
    const denied = fileError(system('EACCES', 'open', `EACCES: permission denied, open '${temp}'`, temp)) as KilnError;
    expect(denied.message).toBe('KILN_E019 /data/run/ckpt.safetensors: cannot open: permission denied (EACCES); check its permissions');
    const other = new RangeError('not a file error');
    expect(fileError(other, 'x')).toBe(other);
  });

  it("KILN_DEBUG=1 prints the stack trace after an error's line", async () => {
    const config = TINY.replace('"n_embd":16', '"n_embd":15');
    const r = await runNode([KILN, 'run', NANOGPT, '--config', config, '--device', 'cpu'], { env: { KILN_DEBUG: '1' } });
    expect(r.code).toBe(1);
    const [line, ...trace] = r.stderr.trimEnd().split('\n');
    expect(line).toMatch(/^KILN_E020 examples\/nanogpt\/model\.ts:\d+: n_embd 15 is not a multiple of n_head 2$/);
    expect(trace.join('\n')).toMatch(/^Error: n_embd 15[^\n]*\n\s+at new CausalSelfAttention /);
  });
});

describe('kiln command line', () => {
  it('parses a boolean flag before MODEL.ts (kiln explain --json MODEL.ts)', async () => {
    const r = await kiln('explain', '--json', NANOGPT, '--config', TINY);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).sites).toHaveLength(1);
  });

  it("reports a model file whose top level throws as KILN_E016 naming the file, without a stack trace", async () => {
    const model = join(dir, 'throws.ts');
    writeFileSync(model, "throw new Error('no GPU in this model');\nexport default () => null;\n");
    const line = refusal(await kiln('run', model));
    expect(line).toBe(`KILN_E016 could not load ${model}: no GPU in this model`);
  });

  it('refuses to run one file as MODEL.ts when another was bundled (a .ts flag value before it)', async () => {
    const other = join(dir, 'other.ts');
    writeFileSync(other, 'export default () => null;\n');
    const line = refusal(await kiln('dump', '--out', other, '--train', NANOGPT));
    expect(line).toBe(`KILN_E015 kiln dump: MODEL.ts is ${NANOGPT}, but kiln loaded ${other} (a flag's value?); put MODEL.ts right after the command; see kiln dump --help`);
    expect(readFileSync(other, 'utf8')).toBe('export default () => null;\n');
  });
});

describe('kiln eval feeds forward() by the parameter names in the source', () => {
  it('feeds forward(q, k, v) from tensors q, k, v though the bundle renames the parameters (KILN_E014 before)', async () => {
    const shape = [1, 2, 4, 8];
    const data = (seed: number) => Float32Array.from({ length: 64 }, (_, i) => Math.sin(seed * 7 + i));
    const inputs = join(dir, 'qkv.safetensors');
    await writeSafetensors(inputs, { q: { dtype: 'F32', shape, data: data(1) }, k: { dtype: 'F32', shape, data: data(2) }, v: { dtype: 'F32', shape, data: data(3) } });
    const out = join(dir, 'qkv-out.safetensors');
    const weights = join(dir, 'empty.safetensors');
    await writeSafetensors(weights, {});
    const r = await kiln('eval', QKV_MODEL, '--weights', weights, '--inputs', inputs, '--out', out, '--outputs', 'out', '--device', 'cpu');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [q, k, v] = [1, 2, 3].map((s) => new Tensor({ dtype: 'f32', shape }, { host: { type: { dtype: 'f32', shape }, data: data(s) } }));
    const expected = await qkvModel({}).forward(q, k, v).out.data();
    expect(relError((await readCheckpoint(out)).tensors.get('out')!.data, expected)).toBeLessThan(1e-5);
  });
});
