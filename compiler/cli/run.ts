// kiln run: compile a model, print a summary of its IR per stage, run it on random tokens on the
// machine's adapter, and print the loss and the time per forward.

import type { Graph } from '../../ir/graph.ts';
import { numel } from '../../ir/types.ts';
import type { BackendName } from '../backends.ts';
import { compile } from '../compile.ts';
import { tensor } from '../frontend/create.ts';
import { manualSeed, random } from '../frontend/random.ts';
import { STAGES } from '../../passes/index.ts';
import { stringFlag, usageError } from './args.ts';
import type { Command } from './main.ts';
import { loadModel } from './model.ts';

export const runCommand: Command = {
  spec: {
    name: 'run',
    summary: 'compile a model, summarize its IR, run it on random tokens and print loss and time',
    usage: 'kiln run MODEL.ts [--weights W.safetensors] [--config JSON] [--batch B] [--seq T] [--iters N] [--device webgpu|cpu]',
    example: `kiln run examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96}' --batch 2 --seq 24`,
    positionals: ['MODEL.ts'],
    flags: [
      { name: 'weights', kind: 'string', help: 'checkpoint to load (default: fresh init, seeded)' },
      { name: 'config', kind: 'string', help: 'JSON config, merged over the checkpoint config' },
      { name: 'batch', kind: 'string', default: '2', help: 'batch size B' },
      { name: 'seq', kind: 'string', default: '24', help: 'sequence length T' },
      { name: 'iters', kind: 'string', default: '3', help: 'timed forwards after one warm-up' },
      { name: 'device', kind: 'string', choices: ['webgpu', 'cpu'], default: 'webgpu', help: 'where to run' },
    ],
  },

  async run(args, mod) {
    const int = (name: string) => {
      const v = Number(stringFlag(args, name));
      if (!Number.isInteger(v) || v < 1) throw usageError('run', `--${name} must be a positive integer`);
      return v;
    };
    const [B, T, iters] = [int('batch'), int('seq'), int('iters')];
    manualSeed(1337);
    const { model, config } = await loadModel('run', mod, args.positionals[0], stringFlag(args, 'weights'), stringFlag(args, 'config'));
    const vocab = typeof config.vocab_size === 'number' ? config.vocab_size : 50304;
    const tokens = () => tensor(Array.from({ length: B * T }, () => Math.floor(random() * vocab)), [B, T], 'i32');
    const [idx, targets] = [tokens(), tokens()];
    const device = stringFlag(args, 'device') as BackendName;

    const compiled = compile(model, { backend: device });
    const t0 = performance.now();
    const c = await compiled.lower(idx as never, targets as never);
    const compileMs = performance.now() - t0;
    const params = model.parameters().reduce((n, p) => n + numel(p.shape), 0);
    console.log(`model: ${args.positionals[0]}  ${(params / 1e6).toFixed(2)}M parameters  input [${B},${T}]  device ${device}`);
    for (const stage of STAGES) {
      const g = c.passes.stages.get(stage);
      if (g) console.log(`  ${stage.padEnd(10)} ${summarize(g)}`);
    }
    console.log(`compile: ${compileMs.toFixed(0)} ms (trace, passes, codegen)`);

    const call = compiled as unknown as (...a: unknown[]) => Promise<{ loss?: { item(): Promise<number> } }>;
    const warm = await call(idx, targets);
    const loss = await warm.loss?.item();
    const times: number[] = [];
    for (let i = 0; i < iters; i++) {
      const s = performance.now();
      const out = await call(idx, targets);
      await out.loss?.item();
      times.push(performance.now() - s);
    }
    times.sort((a, b) => a - b);
    console.log(`loss: ${loss?.toFixed(4) ?? 'n/a'}`);
    console.log(`forward: median ${times[times.length >> 1].toFixed(1)} ms over ${iters} runs (min ${times[0].toFixed(1)}, max ${times[times.length - 1].toFixed(1)}), incl. readback of the loss`);
  },
};

/** `212 nodes: 38 param, 24 matmul, ...`: the node count and the most common ops. */
export function summarize(g: Graph): string {
  const counts = new Map<string, number>();
  for (const n of g.nodes) counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
  const top = [...counts].sort((a, b) => b[1] - a[1]).map(([op, n]) => `${n} ${op}`);
  return `${g.nodes.length} nodes: ${top.join(', ')}`;
}
