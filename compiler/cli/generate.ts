// kiln generate: nanoGPT's sampling loop with the KV cache kiln derives from the model's forward()
// (compiler/generate.ts): streams the new tokens (as characters when the checkpoint's __metadata__ has
// the char vocabulary, as ids otherwise), then prefill and decode tokens/s and the kernels per token.

import { readSafetensors } from '../../runtime/safetensors.ts';
import type { BackendName } from '../backends.ts';
import { manualSeed } from '../frontend/random.ts';
import { compileGenerator } from '../generate.ts';
import { type ParsedArgs, stringFlag, usageError } from './args.ts';
import type { Command } from './main.ts';
import { DTYPE_FLAG, MODEL_FLAGS, autocastFlag, loadModel } from './model.ts';
import { fileError } from './report.ts';

/** The checkpoint's characters (`__metadata__.chars`, a JSON list, as train.ts writes it), if it has them. */
async function charsOf(weights: string | undefined): Promise<string[] | null> {
  if (!weights) return null;
  const raw = (await readSafetensors(weights).catch((e: unknown) => Promise.reject(fileError(e, weights, '--weights')))).metadata.chars;
  if (raw === undefined) return null;
  const chars: unknown = JSON.parse(raw);
  return Array.isArray(chars) && chars.every((c) => typeof c === 'string') ? chars : null;
}

/** A number flag, or its default; a bad one is a usage error naming the flag. */
function numberFlag(args: ParsedArgs, name: string, test: (v: number) => boolean, want: string): number {
  const text = stringFlag(args, name)!;
  const v = Number(text);
  if (text.trim() === '' || !test(v)) throw usageError('generate', `--${name} must be ${want}, got "${text}"`);
  return v;
}

/** The prompt's token ids: --prompt-ids, --prompt through the checkpoint's characters, or nanoGPT's start "\n". */
function promptIds(args: ParsedArgs, chars: string[] | null): number[] {
  const ids = stringFlag(args, 'prompt-ids');
  const text = stringFlag(args, 'prompt');
  if (ids !== undefined && text !== undefined) throw usageError('generate', 'give --prompt or --prompt-ids, not both');
  if (ids !== undefined) {
    const parts = ids.split(',').map((s) => s.trim());
    if (parts.some((p) => !/^-?\d+$/.test(p))) throw usageError('generate', `--prompt-ids takes comma-separated integers, e.g. 0,13,14; got "${ids}"`);
    return parts.map(Number);
  }
  const prompt = text ?? '\n';
  if (!chars) {
    if (text === undefined) return [0];
    throw usageError('generate', '--prompt needs the checkpoint\'s character vocabulary (__metadata__.chars, as examples/nanogpt/train.ts saves it); give token ids with --prompt-ids');
  }
  return [...prompt].map((c) => {
    const id = chars.indexOf(c);
    if (id < 0) throw usageError('generate', `--prompt has ${JSON.stringify(c)}, which is not in the checkpoint's ${chars.length} characters`);
    return id;
  });
}

export const generateCommand: Command = {
  spec: {
    name: 'generate',
    summary: 'generate tokens with a KV cache derived from the model, sampling on the device; prints prefill and decode tokens/s',
    usage: 'kiln generate MODEL.ts --weights W [--prompt TEXT | --prompt-ids 1,2,3] [--max-new-tokens N] [--temperature T] [--top-k K] [--greedy] [--seed S] [--no-cache] [--device webgpu|cpu] [--dtype float16|float32] [--json]',
    example: 'kiln generate examples/nanogpt/model.ts --weights examples/browser/checkpoint.safetensors --prompt "ROMEO:" --max-new-tokens 200',
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS.filter((f) => f.name === 'weights' || f.name === 'config'),
      { name: 'prompt', kind: 'string', help: "text to continue, through the checkpoint's character vocabulary (default: a newline, as nanoGPT's sample.py)" },
      { name: 'prompt-ids', kind: 'string', help: 'the prompt as comma-separated token ids, e.g. 0,13,14' },
      { name: 'max-new-tokens', kind: 'string', default: '100', help: 'how many tokens to generate' },
      { name: 'temperature', kind: 'string', default: '0.8', help: "divides the logits before sampling (nanoGPT's sample.py default)" },
      { name: 'top-k', kind: 'string', default: '200', help: 'sample among the k most likely tokens only; 0: all' },
      { name: 'greedy', kind: 'boolean', help: 'take the most likely token each step (no sampling)' },
      { name: 'seed', kind: 'string', default: '1337', help: 'seeds the draws (and a model made without --weights)' },
      { name: 'no-cache', kind: 'boolean', help: 'recompute the whole window for every token (no KV cache), for comparison' },
      { name: 'device', kind: 'string', choices: ['webgpu', 'cpu'], default: 'webgpu', help: 'where to run' },
      DTYPE_FLAG,
      { name: 'json', kind: 'boolean', help: 'print {"tokens": [...], "prefill_tokens_per_s": x, "decode_tokens_per_s": y, "kernels_per_token": k} instead of the text' },
    ],
  },

  async run(args, mod) {
    const maxNewTokens = numberFlag(args, 'max-new-tokens', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
    const temperature = numberFlag(args, 'temperature', (v) => v > 0 && Number.isFinite(v), 'a positive number');
    const topK = numberFlag(args, 'top-k', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
    const seed = numberFlag(args, 'seed', Number.isInteger, 'an integer');
    const device = stringFlag(args, 'device') as BackendName;
    const autocast = autocastFlag('generate', args);
    const json = args.flags.get('json') === true;
    const weights = stringFlag(args, 'weights');
    manualSeed(seed);
    const { model } = await loadModel('generate', mod, args.positionals[0], weights, stringFlag(args, 'config'));
    const chars = await charsOf(weights);
    const prompt = promptIds(args, chars);
    const generator = await compileGenerator(model, { backend: device, autocast: autocast ?? false });
    const show = (id: number) => (chars ? (chars[id] ?? '?') : `${id} `);
    if (!json) process.stdout.write(prompt.map(show).join(''));
    const result = await generator.generate(prompt, {
      maxNewTokens,
      temperature,
      topK,
      greedy: args.flags.get('greedy') === true,
      seed,
      cache: args.flags.get('no-cache') !== true,
      onToken: (s) => void (json ? undefined : process.stdout.write(show(s.tokens[0]))),
    });
    const rate = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(1)) : null);
    if (json) {
      console.log(JSON.stringify({ tokens: result.tokens[0], prefill_tokens_per_s: rate(result.prefillTokensPerS), decode_tokens_per_s: rate(result.decodeTokensPerS), kernels_per_token: result.kernelsPerToken }));
      return;
    }
    const mode = args.flags.get('no-cache') ? 'no cache: each token recomputes the window' : `KV cache of ${generator.capacity} positions`;
    console.log(`\n\nprefill: ${rate(result.prefillTokensPerS) ?? '-'} tokens/s (${Math.min(prompt.length, generator.blockSize)} tokens, ${result.prefillMs.toFixed(1)} ms)`);
    console.log(`decode: ${rate(result.decodeTokensPerS) ?? '-'} tokens/s (${Math.max(maxNewTokens - 1, 0)} tokens, ${result.decodeMs.toFixed(1)} ms; ${result.kernelsPerToken} kernels per token; ${mode}; device ${device})`);
  },
};
