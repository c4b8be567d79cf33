import { describe, expect, it } from 'vitest';
import { KilnError, type HostTensor, manualSeed, tensor } from '../index.ts';
import { loadCheckpointBytes, saveCheckpointBytes } from '../compiler/checkpoint.ts';
import createModel, { type GPT, type GPTConfig, defaultConfig } from '../examples/nanogpt/model.ts';
import { serializeSafetensors } from '../runtime/safetensors.ts';
import { loadFixture } from './helpers.ts';

const fx = await loadFixture();
const FIXTURE_CONFIG = fx.config as Partial<GPTConfig>; // block 32, vocab 96, 2 layers, 2 heads, n_embd 32, bias

/** nanoGPT's state_dict keys for one block, in model.py's order. */
const blockKeys = (i: number, bias = true) =>
  ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.weight', 'attn.c_attn.bias', 'attn.c_proj.weight', 'attn.c_proj.bias', 'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias']
    .filter((k) => bias || !k.endsWith('.bias'))
    .map((k) => `transformer.h.${i}.${k}`);

const nanoGptKeys = (nLayer: number, bias = true) => [
  'transformer.wte.weight',
  'transformer.wpe.weight',
  ...Array.from({ length: nLayer }, (_, i) => blockKeys(i, bias)).flat(),
  'transformer.ln_f.weight',
  ...(bias ? ['transformer.ln_f.bias'] : []),
];

function fixtureModel(override: Partial<GPTConfig> = {}): GPT {
  manualSeed(3);
  return createModel({ ...FIXTURE_CONFIG, ...override });
}

/** Every parameter's values, copied, by name. */
function snapshot(model: GPT): Map<string, Float64Array> {
  return new Map(model.namedParameters().map(([name, p]) => [name, Float64Array.from(p.host!.data)]));
}

function loadError(model: GPT, state: Map<string, HostTensor>): KilnError {
  try {
    model.loadStateDict(state, 'ckpt.safetensors');
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    return e as KilnError;
  }
  throw new Error('expected loadStateDict to throw');
}

describe('state-dict keys are nanoGPT’s', () => {
  it('lists nanoGPT’s parameter keys in model.py’s order, without the tied lm_head.weight (flash true)', () => {
    const keys = [...fixtureModel({ flash: true }).stateDict().keys()];
    expect(keys).toEqual(nanoGptKeys(2));
    expect(keys).not.toContain('lm_head.weight');
  });

  it('has exactly the fixture file’s key set (flash true)', () => {
    expect(new Set(fixtureModel({ flash: true }).stateDict().keys())).toEqual(new Set(fx.weights.keys()));
  });

  it('adds the causal-mask buffers transformer.h.N.attn.bias with flash false', () => {
    const state = fixtureModel({ flash: false }).stateDict();
    expect(new Set(state.keys())).toEqual(new Set([...nanoGptKeys(2), 'transformer.h.0.attn.bias', 'transformer.h.1.attn.bias']));
    const mask = state.get('transformer.h.1.attn.bias')!;
    expect(mask.type).toEqual({ dtype: 'f32', shape: [1, 1, 32, 32] });
    expect([mask.data[0], mask.data[1], mask.data[32], mask.data[33]]).toEqual([1, 0, 1, 1]);
  });

  it('drops every .bias key with bias false', () => {
    expect([...fixtureModel({ bias: false }).stateDict().keys()]).toEqual(nanoGptKeys(2, false));
  });

  it('stores the tied embedding once: transformer.wte.weight and lm_head.weight are one tensor', () => {
    const model = fixtureModel();
    expect(model.lm_head.weight).toBe(model.transformer.wte.weight);
    expect(model.allParameterNames().map(([n]) => n)).toContain('lm_head.weight');
  });
});

describe('loading a state dict', () => {
  it('loads the PyTorch fixture file: every parameter takes the file’s values', () => {
    const model = fixtureModel();
    model.loadStateDict(fx.weights, 'fixture');
    for (const [name, p] of model.namedParameters()) expect(p.host!.data).toEqual(fx.weights.get(name)!.data);
  });

  it('loads the tied embedding from lm_head.weight when transformer.wte.weight is absent', () => {
    const model = fixtureModel();
    const state = new Map(fx.weights);
    state.set('lm_head.weight', state.get('transformer.wte.weight')!);
    state.delete('transformer.wte.weight');
    model.loadStateDict(state);
    expect(model.lm_head.weight.host!.data).toEqual(fx.weights.get('transformer.wte.weight')!.data);
  });

  it('accepts a flash-false state dict without mask buffers, keeping the model’s own causal mask', () => {
    const model = fixtureModel({ flash: false });
    const maskBefore = model.stateDict().get('transformer.h.0.attn.bias')!.data;
    model.loadStateDict(fx.weights);
    expect(model.stateDict().get('transformer.h.0.attn.bias')!.data).toBe(maskBefore);
  });
});

describe('a bad state dict is refused with a one-line KILN_E006 naming the key, and loads nothing', () => {
  const last = 'transformer.ln_f.bias'; // checked last, so a partial load would have changed every other parameter
  const cases: [string, (s: Map<string, HostTensor>) => void, string[]][] = [
    ['a missing key', (s) => s.delete(last), ['missing key "transformer.ln_f.bias"']],
    ['an extra key', (s) => s.set('transformer.h.2.ln_1.weight', s.get('transformer.h.1.ln_1.weight')!), ['unexpected key "transformer.h.2.ln_1.weight"']],
    ['a misshaped key', (s) => s.set(last, { type: { dtype: 'f32', shape: [31] }, data: new Float32Array(31) }), [`key "${last}" is f32[31], the model expects f32[32]`]],
    ['a key of the wrong dtype', (s) => s.set(last, { type: { dtype: 'i32', shape: [32] }, data: new Int32Array(32) }), [`key "${last}" is i32[32], the model expects f32[32]`]],
    // A float key loads into a float parameter of another dtype converted (test/f16-checkpoint.test.ts), but its shape must still fit.
    ['a misshaped key of the other float dtype', (s) => s.set(last, { type: { dtype: 'f16', shape: [31] }, data: new Float32Array(31) }), [`key "${last}" is f16[31], the model expects f32[32]`]],
  ];
  for (const [what, spoil, fragments] of cases) {
    it(`refuses ${what}`, () => {
      const model = fixtureModel();
      const before = snapshot(model);
      const versions = model.parameters().map((p) => p.version);
      const state = new Map(fx.weights);
      spoil(state);
      const e = loadError(model, state);
      expect(e.code).toBe('KILN_E006');
      expect(e.message.startsWith('KILN_E006 ckpt.safetensors: ')).toBe(true);
      for (const f of fragments) expect(e.message).toContain(f);
      expect(e.message.split('\n')).toHaveLength(1);
      expect(model.parameters().map((p) => p.version)).toEqual(versions); // nothing written (snapshot's reads of host count as writes)
      expect(snapshot(model)).toEqual(before);
    });
  }
});

describe('checkpoints save and load through safetensors bytes', () => {
  it('round-trips every parameter and the config, and the loaded model computes the same logits', async () => {
    const source = fixtureModel({ flash: false });
    const config = { ...FIXTURE_CONFIG, flash: false };
    const bytes = saveCheckpointBytes(source, config);
    manualSeed(99);
    const target = createModel(config);
    expect(snapshot(target)).not.toEqual(snapshot(source));
    expect(loadCheckpointBytes(target, bytes, 'round.safetensors')).toEqual(config);
    expect(snapshot(target)).toEqual(snapshot(source));
    const idx = tensor([1, 5, 9, 2, 7, 3], [2, 3], 'i32');
    expect(await target.eval().forward(idx).logits.data()).toEqual(await source.eval().forward(idx).logits.data());
  });

  it('saves the mask buffers with flash false, as nanoGPT’s state_dict does', () => {
    const bytes = saveCheckpointBytes(fixtureModel({ flash: false }));
    const target = fixtureModel({ flash: false });
    expect(() => loadCheckpointBytes(target, bytes, 'x.safetensors')).not.toThrow();
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))));
    expect(header).toContain('"transformer.h.1.attn.bias"');
    expect(header).not.toContain('lm_head.weight');
  });

  it('returns {} for a checkpoint with no config, and refuses a config that is not a JSON object with KILN_E005', () => {
    const model = fixtureModel();
    expect(loadCheckpointBytes(model, saveCheckpointBytes(model), 'plain.safetensors')).toEqual({});
    const tensors = new Map([...model.stateDict()].map(([k, t]) => [k, { dtype: 'F32' as const, shape: [...t.type.shape], data: t.data }]));
    const bad = serializeSafetensors(tensors, { config: '[1, 2]' });
    expect(() => loadCheckpointBytes(model, bad, 'bad.safetensors')).toThrow(/KILN_E005 .*bad\.safetensors.*config is not a JSON object/);
  });
});

// ---- parameter count ----

/**
 * nanoGPT's count, from the architecture (d = n_embd, L = n_layer, V = vocab_size, B = block_size):
 *   per block: ln_1 2d + c_attn (3d*d + 3d) + attn.c_proj (d*d + d) + ln_2 2d + c_fc (4d*d + 4d) + mlp.c_proj (4d*d + d)
 *            = 12d^2 + 13d          (without biases: 12d^2 + 2d, the LayerNorm weights)
 *   total: wte V*d (lm_head is tied: counted once) + wpe B*d + L blocks + ln_f 2d (or d)
 *   getNumParams() leaves out wpe, as nanoGPT does.
 */
function expectedParams(c: Pick<GPTConfig, 'vocab_size' | 'block_size' | 'n_layer' | 'n_embd' | 'bias'>, nonEmbedding = true): number {
  const d = c.n_embd;
  const block = 12 * d * d + (c.bias ? 13 * d : 2 * d);
  const total = c.vocab_size * d + c.block_size * d + c.n_layer * block + (c.bias ? 2 * d : d);
  return nonEmbedding ? total - c.block_size * d : total;
}

describe('getNumParams() counts as nanoGPT does', () => {
  const configs: Partial<GPTConfig>[] = [
    FIXTURE_CONFIG,
    { ...FIXTURE_CONFIG, bias: false },
    { block_size: 24, vocab_size: 50, n_layer: 3, n_head: 4, n_embd: 48, bias: true },
    { block_size: 8, vocab_size: 7, n_layer: 1, n_head: 1, n_embd: 4, bias: false },
  ];
  for (const config of configs) {
    const c = { ...defaultConfig, ...config };
    it(`matches the formula for d=${c.n_embd}, L=${c.n_layer}, V=${c.vocab_size}, B=${c.block_size}, bias ${c.bias}`, () => {
      const model = createModel(c);
      expect(model.getNumParams()).toBe(expectedParams(c));
      expect(model.getNumParams(false)).toBe(expectedParams(c, false));
    });
  }

  it('gives 123,689,472 for the GPT-2 124M config with vocab 50304, which nanoGPT prints as 123.69M', () => {
    // 50304*768 + 12*(12*768^2 + 13*768) + 2*768 = 38,633,472 + 85,054,464 + 1,536
    const n = expectedParams({ vocab_size: 50304, block_size: 1024, n_layer: 12, n_embd: 768, bias: true });
    expect(n).toBe(123_689_472);
    expect(`${(n / 1e6).toFixed(2)}M`).toBe('123.69M');
    // GPT-2's own vocab of 50257 (from_pretrained('gpt2')): nanoGPT prints 123.65M
    expect(expectedParams({ vocab_size: 50257, block_size: 1024, n_layer: 12, n_embd: 768, bias: true })).toBe(123_653_376);
  });
});

describe('buffers in a state dict', () => {
  it('loads a buffer the checkpoint has, and refuses a misshaped one before loading anything', async () => {
    const model = fixtureModel({ flash: false });
    const key = 'transformer.h.0.attn.bias';
    const flipped = Float32Array.from(model.stateDict().get(key)!.data);
    flipped[5] = 1; // row 0, col 5: above the diagonal
    model.loadStateDict(new Map([...fx.weights, [key, { type: { dtype: 'f32', shape: [1, 1, 32, 32] }, data: flipped }]]), 'ckpt');
    expect(model.stateDict().get(key)!.data[5]).toBe(1);

    const fresh = fixtureModel({ flash: false });
    const before = snapshot(fresh);
    const e = loadError(fresh, new Map([...fx.weights, [key, { type: { dtype: 'f32', shape: [1, 1, 16, 16] }, data: new Float32Array(256) }]]));
    expect(e.message).toContain(`key "${key}" is f32[1,1,16,16], the model expects f32[1,1,32,32]`);
    expect(snapshot(fresh)).toEqual(before);
  });
});
