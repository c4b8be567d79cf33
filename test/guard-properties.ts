// The property behind the guards: whatever sequence of calls and state changes a user makes, a
// compiled nanoGPT gives what eager gives. fast-check draws the sequences; shared by the cpu and the
// webgpu guard test files. Tolerance: guard-cases.ts's GUARD_TOL (f32 reassociation on a tiny model).

import fc from 'fast-check';
import { expect, it } from 'vitest';
import type { BackendName } from '../compiler/backends.ts';
import { Parameter, compile, noGrad, useBackend } from '../index.ts';
import createModel, { type GPT } from '../examples/nanogpt/model.ts';
import { GUARD_TOL, eagerLogits, leakyMask, maskOf, smallGPT, tokens } from './guard-cases.ts';
import { relError } from './helpers.ts';

const BLOCK = 8;
type MaskKind = 'causal' | 'leaky';
const maskKind = fc.constantFrom<MaskKind>('causal', 'leaky');
const layer = fc.integer({ min: 0, max: 1 });
const newMask = (kind: MaskKind) => (kind === 'causal' ? maskOf(BLOCK) : leakyMask(BLOCK));
/** Parameters a change may touch: an embedding (tied with lm_head), a projection, a bias, a LayerNorm weight. */
const PARAMS = ['transformer.wte.weight', 'transformer.h.0.attn.c_attn.weight', 'transformer.h.1.mlp.c_proj.bias', 'transformer.ln_f.weight'] as const;

type Change =
  | { kind: 'call'; t: number; on: BackendName }
  | { kind: 'eager on webgpu' }
  | { kind: 'write mask in place'; layer: number; mask: MaskKind }
  | { kind: 'registerBuffer'; layer: number; mask: MaskKind }
  | { kind: 'assign attribute'; layer: number; mask: MaskKind }
  | { kind: 'loadStateDict'; seed: number; mask: MaskKind }
  | { kind: 'replace parameter'; name: (typeof PARAMS)[number]; scale: number }
  | { kind: 'write parameter in place'; name: (typeof PARAMS)[number]; delta: number };

function changes(backends: readonly BackendName[]): fc.Arbitrary<Change[]> {
  const change: fc.Arbitrary<Change> = fc.oneof(
    fc.record({ kind: fc.constant('call' as const), t: fc.constantFrom(5, 8), on: fc.constantFrom(...backends) }),
    ...(backends.includes('webgpu') ? [fc.constant({ kind: 'eager on webgpu' as const })] : []),
    fc.record({ kind: fc.constant('write mask in place' as const), layer, mask: maskKind }),
    fc.record({ kind: fc.constant('registerBuffer' as const), layer, mask: maskKind }),
    fc.record({ kind: fc.constant('assign attribute' as const), layer, mask: maskKind }),
    fc.record({ kind: fc.constant('loadStateDict' as const), seed: fc.integer({ min: 1, max: 1000 }), mask: maskKind }),
    fc.record({ kind: fc.constant('replace parameter' as const), name: fc.constantFrom(...PARAMS), scale: fc.constantFrom(-1, 0.5, 2) }),
    fc.record({ kind: fc.constant('write parameter in place' as const), name: fc.constantFrom(...PARAMS), delta: fc.constantFrom(-0.25, 0.5) }),
  );
  return fc.array(change, { minLength: 1, maxLength: 6 });
}

function paramOwner(model: GPT, name: string): { owner: Record<string, unknown>; key: string } {
  const parts = name.split('.');
  const key = parts.pop()!;
  let owner: Record<string, unknown> = model as unknown as Record<string, unknown>;
  for (const p of parts) owner = owner[p] as Record<string, unknown>;
  return { owner, key };
}

async function apply(model: GPT, c: Change): Promise<void> {
  const attn = (i: number) => model.transformer.h.at(i).attn;
  switch (c.kind) {
    case 'write mask in place':
      attn(c.layer).bias.host!.data[1 * BLOCK + 5] = c.mask === 'leaky' ? 1 : 0;
      return;
    case 'registerBuffer':
      return attn(c.layer).registerBuffer('bias', newMask(c.mask));
    case 'assign attribute':
      attn(c.layer).bias = newMask(c.mask);
      return;
    case 'loadStateDict': {
      const state = createModel({ ...model.config, flash: false }).stateDict();
      state.set('transformer.h.0.attn.bias', newMask(c.mask).readHost()!);
      return model.loadStateDict(state);
    }
    case 'replace parameter': {
      const { owner, key } = paramOwner(model, c.name);
      const old = owner[key] as Parameter;
      const fresh = new Parameter({ type: old.type, data: Float32Array.from(await old.data(), (x) => c.scale * x) });
      owner[key] = fresh;
      if (c.name === 'transformer.wte.weight') model.lm_head.weight = fresh; // keep the tie, as a user retying would
      return;
    }
    case 'write parameter in place': {
      const { owner, key } = paramOwner(model, c.name);
      const data = (owner[key] as Parameter).host!.data;
      for (let i = 0; i < data.length; i += 2) data[i] += c.delta;
      return;
    }
    default:
      return;
  }
}

/** Registers the property: compiled (on each of `backends`) equals cpu eager after every change. */
export function guardProperty(backends: readonly BackendName[], numRuns: number): void {
  it(`random sequences of calls and state changes: compiled on ${backends.join(' and ')} equals eager after every step (${numRuns} runs)`, async () => {
    await fc.assert(
      fc.asyncProperty(changes(backends), async (steps) => {
        const model = smallGPT();
        const compiled = new Map(backends.map((b) => [b, compile(model, { backend: b })]));
        for (const step of [...steps, { kind: 'call', t: 8, on: backends[backends.length - 1] } as Change]) {
          await apply(model, step);
          if (step.kind === 'eager on webgpu') {
            const idx = tokens(1, 6);
            const want = await eagerLogits(model, idx);
            await useBackend('webgpu');
            try {
              expect(relError(await noGrad(() => model.forward(idx)).logits.data(), want)).toBeLessThan(GUARD_TOL);
            } finally {
              await useBackend('cpu');
            }
          }
          if (step.kind !== 'call') continue;
          const idx = tokens(2, step.t);
          const { logits } = await compiled.get(step.on)!(idx);
          expect(relError(await logits.data(), await eagerLogits(model, idx))).toBeLessThan(GUARD_TOL);
        }
      }),
      { numRuns },
    );
  });
}
