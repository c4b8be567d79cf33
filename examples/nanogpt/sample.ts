// nanoGPT's sample.py for kiln: load out_dir/ckpt.safetensors, rebuild the GPT from its config,
// generate, decode with the checkpoint's characters. Run: npm run sample -- --out_dir out-shakespeare-char
// Generation runs compiled with a KV cache (compileGenerator, docs/generate.md): one prefill of the prompt,
// then one decode step per token, sampling on the device; --cache false recomputes the window per token
// (nanoGPT's loop). --device webgpu (default, sample.py's cuda) or cpu.
// While it generates, stderr shows the tokens done, tokens per second and the time left (compiler/cli/progress.ts).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KilnError } from '../../index.ts';
import type { BackendName } from '../../compiler/backends.ts';
import { compileGenerator } from '../../compiler/generate.ts';
import { modelState } from '../../compiler/checkpoint.ts';
import { type ProgressStream, ProgressLine } from '../../compiler/cli/progress.ts';
import { fileError, reportError } from '../../compiler/cli/report.ts';
import { charsOf, readTrainingCheckpoint } from './checkpoint.ts';
import { GPT, defaultConfig } from './model.ts';
import { parseFlags } from './train.ts';

export const sampleDefaults = {
  out_dir: 'out-shakespeare-char',
  start: '\n', // or "FILE:prompt.txt"; \n in a flag value is a newline
  num_samples: 2, // number of samples to draw
  max_new_tokens: 100, // number of tokens generated in each sample
  temperature: 0.8, // 1.0 = no change, < 1.0 = less random, > 1.0 = more random
  top_k: 200, // retain only the top_k most likely tokens, clamp others to have 0 probability
  seed: 1337,
  device: 'webgpu', // 'webgpu' or 'cpu'
  cache: true, // false: recompute the whole window for every token (no KV cache)
};

/**
 * Prints num_samples samples, each followed by a separator line, and returns them. The progress line
 * (tokens generated of num_samples * max_new_tokens) goes to `progressTo`, stderr by default.
 */
export async function main(argv: readonly string[], logTo?: (text: string) => void, progressTo?: ProgressStream): Promise<string[]> {
  const log = logTo ?? ((text: string) => void process.stdout.write(text));
  const cfg = parseFlags(argv, sampleDefaults);
  if (cfg.device !== 'webgpu' && cfg.device !== 'cpu') throw new KilnError('KILN_E015', `--device must be webgpu or cpu, got ${cfg.device}`);
  const ckptPath = join(cfg.out_dir, 'ckpt.safetensors');
  const ckpt = await readTrainingCheckpoint(ckptPath);
  const chars = charsOf(ckpt);
  const model = new GPT({ ...defaultConfig, ...ckpt.config });
  model.loadStateDict(modelState(model, ckpt.tensors, ckptPath).state, ckptPath);
  model.eval();

  const stoi = new Map(chars.map((c, i) => [c, i]));
  let start = cfg.start.replaceAll('\\n', '\n');
  if (start.startsWith('FILE:')) {
    const path = start.slice(5);
    start = await readFile(path, 'utf-8').catch((e: unknown) => {
      throw fileError(e, path, '--start');
    });
  }
  const startIds = [...start].map((c) => {
    const id = stoi.get(c);
    if (id === undefined) throw new KilnError('KILN_E011', `--start: character ${JSON.stringify(c)} is not in the vocabulary`);
    return id;
  });

  const generator = await compileGenerator(model, { backend: cfg.device as BackendName });
  const samples: string[] = [];
  const progress = new ProgressLine('sampling', cfg.num_samples * cfg.max_new_tokens, { unit: 'token', ...(progressTo ? { stream: progressTo } : {}) });
  let done = 0; // tokens generated so far, all samples
  for (let k = 0; k < cfg.num_samples; k++) {
    // Sample k draws with seed + k: the same flags give the same samples, each sample its own.
    progress.update(done);
    const { tokens } = await generator.generate(startIds, {
      maxNewTokens: cfg.max_new_tokens,
      temperature: cfg.temperature,
      topK: Math.min(cfg.top_k, generator.vocabSize),
      seed: cfg.seed + k,
      cache: cfg.cache,
      onToken: ({ index }) => progress.update(done + index + 1),
    });
    done += cfg.max_new_tokens;
    progress.finish(); // the sample's text follows on stdout
    const text = [...startIds, ...tokens[0]].map((i) => chars[i]).join('');
    samples.push(text);
    log(`${text}\n---------------\n`);
  }
  return samples;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // every error is one coded line, never a stack trace (KILN_DEBUG=1 adds it)
  await main(process.argv.slice(2)).catch((e: unknown) => {
    reportError(e);
    process.exitCode = 1;
  });
}
