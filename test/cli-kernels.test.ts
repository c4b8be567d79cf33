// `kiln kernels`: the golden kernel list of nanoGPT (manual attention, fused), and the numbers in it:
// FLOPs of a matmul are 2*B*M*N*K, bytes are inputs read plus the output written, at each dtype's size
// (4 bytes an element for f32, i32 and bool; 2 for f16, under --dtype float16).

import { describe, expect, it } from 'vitest';
import { type KernelReport, kernelsCommand } from '../compiler/cli/kernels.ts';
import { NANOGPT, SMALL_GPT, printed } from './cli-capture.ts';

const [B, T, C, V] = [2, 8, SMALL_GPT.n_embd, SMALL_GPT.vocab_size];
const kernels = (...flags: string[]) => printed(kernelsCommand, [NANOGPT, '--config', JSON.stringify({ ...SMALL_GPT, flash: false }), '--batch', String(B), '--seq', String(T), ...flags]);

interface Listing {
  kernels: KernelReport[];
  totals: { kernels: number; flops: number; bytes: number };
}
const listing = async (...flags: string[]): Promise<Listing> => JSON.parse(await kernels('--json', ...flags)) as Listing;
const at = (l: Listing, op: string, line: RegExp) => l.kernels.find((k) => k.op === op && line.test(k.source ?? ''))!;

describe('kiln kernels on nanoGPT', () => {
  it('prints the golden kernel list, text and json', async () => {
    await expect(await kernels()).toMatchFileSnapshot('./__snapshots__/cli/kernels.nanogpt-manual.txt');
    await expect(await kernels('--json')).toMatchFileSnapshot('./__snapshots__/cli/kernels.nanogpt-manual.json');
  });

  it('lists kernels in dispatch order with the node and source line each came from', async () => {
    const l = await listing();
    expect(l.kernels.map((k) => k.index)).toEqual([...l.kernels.keys()]);
    expect(l.kernels.filter((k) => k.op === 'fused_attention')).toHaveLength(SMALL_GPT.n_layer);
    for (const k of l.kernels) {
      expect(k.loc).toMatch(/^examples\/nanogpt\/model\.ts:\d+:\d+$/);
      expect(k.workgroups).toHaveLength(3);
    }
    expect(l.kernels.at(-1)!.op).toBe('cross_entropy');
  });

  it('counts 2*B*M*N*K FLOPs for a matmul: the q, k, v projection [B,T,C] @ [C,3C] and the lm_head', async () => {
    const l = await listing();
    // c_attn and c_fc carry their bias add (and GELU) as epilogues (passes/matmul-epilogue.ts): one FLOP an output element per op of the chain.
    expect(at(l, 'matmul_epilogue', /c_attn/).flops).toBe(2 * B * T * (3 * C) * C + B * T * 3 * C);
    expect(at(l, 'matmul_epilogue', /c_fc/).flops).toBe(2 * B * T * (4 * C) * C + 2 * B * T * 4 * C);
    expect(at(l, 'matmul', /lm_head/).flops).toBe(2 * B * T * V * C);
  });

  it('counts bytes as each input read once plus the output written once, 4 bytes an element', async () => {
    const l = await listing();
    // tok_emb [B,T,C] + pos_emb [T,C] (broadcast, read at its own size) -> [B,T,C]
    expect(at(l, 'add', /tok_emb\.add\(pos_emb\)/).bytes).toBe(4 * (B * T * C + T * C + B * T * C));
    // gelu(x @ W^T + b), one kernel (a matmul epilogue): reads x [B,T,C], W [4C,C] and the bias [4C], writes [B,T,4C]
    expect(at(l, 'matmul_epilogue', /c_fc/).bytes).toBe(4 * (B * T * C + 4 * C * C + 4 * C + B * T * 4 * C));
  });

  it('counts f16 tensors at 2 bytes an element with --dtype float16: the matmuls read and write f16', async () => {
    const l = await listing('--dtype', 'float16');
    // x, W and the output in f16; its epilogue's bias [3C] is read as it is stored, in f32
    expect(at(l, 'matmul_epilogue', /c_attn/).bytes).toBe(2 * (B * T * C + 3 * C * C + B * T * 3 * C) + 4 * 3 * C);
    expect(at(l, 'matmul', /lm_head/).bytes).toBe(2 * (B * T * C + V * C + B * T * V));
    expect(at(l, 'add', /tok_emb\.add\(pos_emb\)/).bytes).toBe(4 * (B * T * C + T * C + B * T * C)); // the residual stream stays f32
    // the chain f16(add(f32($0), $1)): a FLOP an element for each of its three ops, casts included (fused_elementwise's count)
    expect(at(l, 'matmul_epilogue', /c_attn/).flops).toBe(2 * B * T * (3 * C) * C + 3 * B * T * 3 * C);
  });

  it('totals the FLOPs and bytes of every kernel', async () => {
    const l = await listing();
    expect(l.totals).toEqual({
      kernels: l.kernels.length,
      flops: l.kernels.reduce((n, k) => n + k.flops, 0),
      bytes: l.kernels.reduce((n, k) => n + k.bytes, 0),
    });
    expect((await kernels()).trimEnd().split('\n').at(-1)).toMatch(/^\d+ kernels: [\d,]+ FLOPs, [\d,]+ bytes moved/);
  });

  it('prints each kernel’s WGSL after its line with --wgsl', async () => {
    const text = await kernels('--wgsl');
    const l = await listing();
    expect(text.match(/@compute/g)).toHaveLength(l.kernels.length);
    expect(text).toMatch(/^ *\d+ +%\d+ fused_attention .*\n\n\/\/ %\d+ = fused_attention\(/m);
    expect((await listing('--wgsl')).kernels.every((k) => k.wgsl?.includes('@compute'))).toBe(true);
  });

  it('keeps the unfused chain with --no-fusion: softmax and matmul kernels instead of fused_attention', async () => {
    const fused = await listing();
    const unfused = await listing('--no-fusion');
    expect(unfused.kernels.some((k) => k.op === 'fused_attention')).toBe(false);
    expect(unfused.kernels.filter((k) => k.op === 'softmax')).toHaveLength(SMALL_GPT.n_layer);
    expect(unfused.totals.kernels).toBeGreaterThan(fused.totals.kernels);
  });

  it('--train lists the compiled training step: the flash backward, one AdamW kernel per parameter, no [B, H, T, T] scores', async () => {
    const l = await listing('--train');
    const count = (op: string) => l.kernels.filter((k) => k.op === op).length;
    expect(count('fused_attention')).toBe(SMALL_GPT.n_layer);
    expect(count('fused_attention_backward')).toBeGreaterThanOrEqual(SMALL_GPT.n_layer);
    // The loss runs as fused_linear_cross_entropy in chunks: no softmax over the logits, a log-sum-exp per chunk.
    expect(count('softmax')).toBe(0);
    expect(count('logsumexp_rows')).toBeGreaterThan(0);
    const params = (await import('../examples/nanogpt/model.ts')).default({ ...SMALL_GPT, flash: false }).namedParameters().length;
    expect(count('adamw_update')).toBe(params);
    expect(l.kernels.at(-1)!.op).toBe('adamw_update');
  });
});
