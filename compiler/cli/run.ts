// kiln run: compile a model, print a summary of its IR per stage, run it on random tokens on the
// machine's adapter, and print the loss and the time per forward.

import type { Graph } from '../../ir/graph.ts';
import { numel } from '../../ir/types.ts';
import type { BackendName } from '../backends.ts';
import { STAGES } from '../../passes/index.ts';
import { stringFlag } from './args.ts';
import type { Command } from './main.ts';
import { DTYPE_FLAG, MODEL_FLAGS, modelSession, positiveInt } from './model.ts';
import { ProgressLine } from './progress.ts';

export const runCommand: Command = {
  spec: {
    name: 'run',
    summary: 'compile a model, summarize its IR, run it on random tokens and print loss and time',
    usage: 'kiln run MODEL.ts [--weights W.safetensors] [--config JSON|gpt2] [--batch B] [--seq T] [--iters N] [--device webgpu|cpu] [--dtype float16|float32]',
    example: `kiln run examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96}' --batch 2 --seq 24`,
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS,
      { name: 'iters', kind: 'string', default: '3', help: 'timed forwards after one warm-up' },
      { name: 'device', kind: 'string', choices: ['webgpu', 'cpu'], default: 'webgpu', help: 'where to run' },
      DTYPE_FLAG,
    ],
  },

  async run(args, mod) {
    const iters = positiveInt('run', args, 'iters');
    const device = stringFlag(args, 'device') as BackendName;
    const session = await modelSession('run', args, mod, { backend: device });
    const { compiled, compilation: c, args: inputs } = session;
    const params = session.model.parameters().reduce((n, p) => n + numel(p.shape), 0);
    const [B, T] = inputs[0]?.shape ?? [];
    const dtype = c.autocast ? `  autocast ${c.autocast}` : '';
    console.log(`model: ${args.positionals[0]}  ${(params / 1e6).toFixed(2)}M parameters  input [${B},${T}]  device ${device}${dtype}`);
    for (const stage of STAGES) {
      const g = c.passes.stages.get(stage);
      if (g) console.log(`  ${stage.padEnd(10)} ${summarize(g)}`);
    }
    console.log(`compile: ${session.compileMs.toFixed(0)} ms (trace, passes, codegen)`);

    const call = compiled as unknown as (...a: unknown[]) => Promise<{ loss?: { item(): Promise<number> } }>;
    // a big model on the CPU takes seconds a forward (GPT-2 124M: ~36 s): a progress line on stderr says how long is left
    const progress = new ProgressLine('forward', iters + 1, { unit: 'forward' });
    progress.update(0);
    const warm = await call(...inputs);
    const loss = await warm.loss?.item();
    const times: number[] = [];
    for (let i = 0; i < iters; i++) {
      progress.update(i + 1);
      const s = performance.now();
      const out = await call(...inputs);
      await out.loss?.item();
      times.push(performance.now() - s);
    }
    progress.finish();
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
