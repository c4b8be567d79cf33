// The memory kiln's planner gives one compiled training step (codegen/memory.ts: buffer slots reused
// along the kernel schedule, plus the leaves: parameters, AdamW moments, the batch), computed here
// without a GPU: `npm run bench:memory -- [--batch 8] [--config gpt2|small]`. It lowers the step with and
// without the fused linear + cross-entropy (passes/linear-ce.ts) and prints both, with the largest buffer
// (which must stay under WebGPU's 2 GiB binding limit).

import { lowerGraph } from '../../codegen/index.ts';
import { planBuffers } from '../../codegen/memory.ts';
import { tensor } from '../../compiler/frontend/create.ts';
import { manualSeed } from '../../compiler/frontend/random.ts';
import { AdamW } from '../../compiler/optim.ts';
import { compileTrainStep } from '../../compiler/train-step.ts';
import createModel from '../../examples/nanogpt/model.ts';
import { bufferBytes } from '../../ir/dtypes.ts';
import { numel } from '../../ir/types.ts';

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1]! : fallback; };
const B = Number(flag('batch', '8'));
const T = 1024;
const dtype = flag('dtype', 'f32');
const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;

for (const fused of [false, true]) {
  manualSeed(1);
  const model = createModel({ dropout: 0, bias: false }); // GPT-2 124M: nanoGPT's defaults
  const optimizer = new AdamW(model, { lr: 6e-4, betas: [0.9, 0.95], weightDecay: 0.1 });
  const step = compileTrainStep(model, optimizer, { backend: 'cpu', gradClip: 1, passes: { fuse_linear_cross_entropy: fused }, ...(dtype === 'f16' ? { autocast: 'f16' as const } : {}) });
  const idx = tensor(new Array(B * T).fill(1), [B, T], 'i32');
  const c = await step.lower(idx, idx);
  const program = lowerGraph(c.step.graph);
  const plan = planBuffers(program);
  const planned = plan.slotBytes.reduce((a, b) => a + b, 0);
  const leaves = c.step.graph.nodes.filter((n) => n.op === 'input').reduce((a, n) => a + bufferBytes(n.type.dtype, numel(n.type.shape)), 0);
  const largest = Math.max(...plan.slotBytes);
  console.log(`GPT-2 124M B${B} T${T} ${dtype} training step, fused linear-CE ${fused ? 'on ' : 'off'}: ${gb(planned)} planned buffers + ${gb(leaves)} leaves = ${gb(planned + leaves)}; largest buffer ${gb(largest)}; ${program.kernels.length} kernels`);
}
