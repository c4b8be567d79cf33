// sample(logits, counter?) {greedy, temperature, topK, seed}: one token id per row of logits [..., V],
// as nanoGPT's generate() picks it: greedy takes the argmax (ties to the lowest id, as torch.argmax);
// otherwise the logits are scaled by 1 / `temperature`, all but the topK largest (0: all; ties with the
// k-th largest are kept, as `logits < v[:, [-1]]` keeps them) set to -inf, softmaxed, and one id drawn.
// The draw is inverse-CDF with a uniform u = dropoutUniform(seed', row), seed' = mixDropoutSeed(seed,
// counter) (ir/ops/attention.ts: the counter-based hash dropout uses, identical in JS and WGSL), so the
// CPU reference and the kernel pick the same id from the same logits and counter; the generator feeds
// the step number as `counter` (an i32[]), so one compiled graph draws fresh ids every step.
// Both sides sum the weights exp(x - max) in the same order: SAMPLE_CHUNKS chunks of ceil(V / chunks)
// ids, each summed in order, then the chunk sums in order; the target u * total is found the same way.
// Inference only: no gradient.

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import type { HostData, Precision } from '../host.ts';
import { registerOp } from '../registry.ts';
import { type TensorType, formatType, numel, sameType } from '../types.ts';
import { dropoutUniform, mixDropoutSeed } from './attention.ts';
import { arity, boolAttr, floatDType, intAttr, numAttr, tensorArg } from './check.ts';
import { RNG_TYPE } from './leaf.ts';

/** How many chunks a row's weights are summed in (the kernel's workgroup size: one chunk per invocation). */
export const SAMPLE_CHUNKS = 256;

export interface SampleSpec {
  greedy: boolean;
  temperature: number;
  /** 0: keep every id. */
  topK: number;
  seed: number;
}

export function sampleSpec(attrs: Attrs): SampleSpec {
  const greedy = boolAttr('sample', attrs, 'greedy', false);
  const temperature = numAttr('sample', attrs, 'temperature', 1);
  const topK = intAttr('sample', attrs, 'topK', 0);
  const seed = intAttr('sample', attrs, 'seed', 0);
  if (!greedy && !(temperature > 0 && Number.isFinite(temperature))) throw new KilnError('KILN_E011', `sample temperature must be a positive number, got ${temperature} (greedy picks the argmax without one)`);
  if (topK < 0) throw new KilnError('KILN_E011', `sample topK must be 0 (keep all) or a positive count, got ${topK}`);
  return { greedy, temperature, topK, seed };
}

registerOp({
  name: 'sample',
  operands: ['logits', 'counter?'],
  infer(inputs, attrs) {
    arity('sample', inputs, 1, 2);
    const logits = tensorArg('sample', inputs, 0);
    floatDType('sample', logits);
    if (logits.shape.length < 1 || logits.shape[logits.shape.length - 1] < 1) throw new KilnError('KILN_E001', `sample needs logits [..., V] with V >= 1, got ${formatType(logits)}`);
    const spec = sampleSpec(attrs);
    if (spec.greedy && inputs.length === 2) throw new KilnError('KILN_E011', 'a greedy sample draws nothing: it takes no counter operand');
    if (inputs.length === 2) {
      const counter = tensorArg('sample', inputs, 1);
      if (!sameType(counter, RNG_TYPE)) throw new KilnError('KILN_E011', `sample's counter must be ${formatType(RNG_TYPE)}, got ${formatType(counter)}`);
    } else if (!spec.greedy) {
      throw new KilnError('KILN_E011', 'sample without greedy draws with a counter operand (i32[], the step number)');
    }
    return { dtype: 'i32', shape: logits.shape.slice(0, -1) };
  },
  cpu(inputs, attrs, out, precision) {
    const [logits, counter] = inputs;
    if (typeof logits === 'number' || typeof counter === 'number') throw new Error('sample of a scalar');
    const spec = sampleSpec(attrs);
    const v = logits.type.shape[logits.type.shape.length - 1];
    const result = new Int32Array(numel(out.shape));
    const seed = counter ? mixDropoutSeed(spec.seed, counter.data[0]) : spec.seed;
    for (let r = 0; r < result.length; r++) result[r] = sampleRow(logits.data.subarray(r * v, (r + 1) * v), spec, dropoutUniform(seed, r), precision);
    return result;
  },
  flops: (inputs) => 4 * numel((inputs[0] as TensorType).shape), // scale, compare, exp, sum per logit
  grad: () => {
    throw new KilnError('KILN_E011', 'sample picks token ids and has no gradient; generation is inference only');
  },
});

/** The k-th largest of `xs` counting repeats (torch.topk(xs, k).values[-1]). */
export function kthLargest(xs: ArrayLike<number>, k: number): number {
  return Float64Array.from(xs).sort((a, b) => b - a)[Math.min(k, xs.length) - 1];
}

/** One row's id: the argmax, or the inverse-CDF draw of u over softmax(top-k(logits / temperature)), summed as the kernel sums. */
export function sampleRow(row: HostData, spec: SampleSpec, u: number, precision: Precision): number {
  const r = precision === 'f32' ? Math.fround : (x: number) => x;
  if (spec.greedy) {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    return best;
  }
  // Times 1 / temperature, rounded once: WGSL's f32 division need not be correctly rounded, its product is.
  const inverse = r(1 / spec.temperature);
  const x = Array.from(row, (l) => r(l * inverse));
  const threshold = spec.topK > 0 && spec.topK < x.length ? kthLargest(x, spec.topK) : -Infinity;
  const max = x.reduce((a, b) => Math.max(a, b), -Infinity);
  const weight = (i: number) => (x[i] >= threshold ? r(Math.exp(x[i] - max)) : 0);
  const chunk = Math.ceil(x.length / SAMPLE_CHUNKS);
  const sums = new Float64Array(SAMPLE_CHUNKS);
  for (let c = 0; c < SAMPLE_CHUNKS; c++) {
    for (let i = c * chunk; i < Math.min((c + 1) * chunk, x.length); i++) sums[c] = r(sums[c] + weight(i));
  }
  let total = 0;
  for (const s of sums) total = r(total + s);
  const target = r(r(u) * total);
  // The chunk where the running sum first passes the target, then the id inside it; rounding that
  // leaves the target unpassed falls back to the last id with weight.
  let before = 0;
  for (let c = 0; c < SAMPLE_CHUNKS; c++) {
    if (r(before + sums[c]) <= target) {
      before = r(before + sums[c]);
      continue;
    }
    let running = before;
    for (let i = c * chunk; i < Math.min((c + 1) * chunk, x.length); i++) {
      running = r(running + weight(i));
      if (running > target) return i;
    }
    break;
  }
  for (let i = x.length - 1; i >= 0; i--) if (weight(i) > 0) return i;
  return 0;
}
