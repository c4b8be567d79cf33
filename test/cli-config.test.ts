// Model commands without --weights or --config (issue 17): nanoGPT is built small, with a note saying so
// and how to ask for GPT-2 124M (--config gpt2), not GPT-2 124M in silence.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { CONFIG_PRESETS, SMALL_CONFIG, loadModel, parseConfigFlag } from '../compiler/cli/model.ts';
import { runCommand } from '../compiler/cli/run.ts';
import { NANOGPT, NEAR_MISS, printed } from './cli-capture.ts';

const SMALL_NOTE = 'note: no --config: using a small nanoGPT (n_layer 2, n_head 4, n_embd 64, block_size 64, vocab_size 65); for GPT-2 124M pass --config gpt2, or a checkpoint with --weights';

/** A model module whose factory records the config it was given (nothing is built). */
function recorder(defaultConfig: Record<string, unknown>) {
  const seen: Record<string, unknown>[] = [];
  const model = { forward: () => undefined, eval: () => undefined };
  return { seen, mod: { defaultConfig, default: (c: Record<string, unknown>) => (seen.push(c), model) } };
}
const NANO_DEFAULTS = { block_size: 1024, vocab_size: 50304, n_layer: 12, n_head: 12, n_embd: 768, flash: true };

let notes: string[] = [];
afterEach(() => vi.restoreAllMocks());
function captureNotes(): void {
  notes = [];
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void notes.push(a.join(' ')));
}

describe('kiln model commands without --config', () => {
  it('kiln run builds the small nanoGPT and prints the note on stderr', async () => {
    captureNotes();
    const out = await printed(runCommand, [NANOGPT, '--device', 'cpu', '--iters', '1']);
    expect(out.split('\n')[0]).toBe('model: examples/nanogpt/model.ts  0.11M parameters  input [2,24]  device cpu');
    expect(notes).toEqual([SMALL_NOTE]);
  });

  it('takes the small config for the keys a partial --config leaves unset, and says which', async () => {
    captureNotes();
    const { seen, mod } = recorder(NANO_DEFAULTS);
    await loadModel('run', mod, 'm.ts', undefined, '{"flash":false,"n_layer":1}');
    expect(seen[0]).toEqual({ n_head: 4, n_embd: 64, block_size: 64, vocab_size: 65, flash: false, n_layer: 1 });
    expect(notes).toEqual(['note: --config leaves n_head, n_embd, block_size, vocab_size unset: using a small nanoGPT (n_head 4, n_embd 64, block_size 64, vocab_size 65); for GPT-2 124M pass --config gpt2, or a checkpoint with --weights']);
  });

  it('--config gpt2 is GPT-2 124M, with no note; small is the default spelled out', async () => {
    captureNotes();
    expect(parseConfigFlag('run', 'gpt2')).toEqual({ n_layer: 12, n_head: 12, n_embd: 768, block_size: 1024, vocab_size: 50304 });
    expect(parseConfigFlag('run', 'small')).toEqual(SMALL_CONFIG);
    const { seen, mod } = recorder(NANO_DEFAULTS);
    await loadModel('dump', mod, 'm.ts', undefined, 'gpt2');
    expect(seen[0]).toEqual(CONFIG_PRESETS.gpt2);
    expect(notes).toEqual([]);
    expect(() => parseConfigFlag('run', 'gpt3')).toThrow('--config must be a JSON object or one of gpt2, small, got gpt3');
  });

  it('leaves a model without those config keys to its own defaults, with no note', async () => {
    captureNotes();
    const { seen, mod } = recorder({ block_size: 16, vocab_size: 96, n_embd: 32, n_head: 2 });
    await loadModel('explain', mod, 'm.ts', undefined, undefined);
    expect(seen[0]).toEqual({});
    expect(notes).toEqual([]);
    expect(NEAR_MISS).toBe('examples/near-miss/model.ts'); // its defaultConfig has no n_layer: the explain goldens keep their model
  });
});
