// Eager autocast, as torch.autocast's context manager: inside `autocast('f16', fn)`, each op fn runs
// eagerly casts its operands by the same lists the compile-time pass uses (passes/autocast.ts): matmul
// and attention in f16, layer_norm, softmax, losses and sums in f32, mixed operands to the widest.
// The casts are ops like any other (recorded for backward(), so a gradient reaches the f32 weight). A
// weight's cast (a leaf that requires grad) is made once per region and reused, as torch caches them;
// the cache is dropped when the outermost region ends. A compiled model called inside the region
// compiles with autocast (compile.ts reads autocastState() at each call: part of its guard).

import { KilnError, type SourceLoc } from '../../ir/errors.ts';
import type { DType } from '../../ir/dtypes.ts';
import type { Attrs } from '../../ir/graph.ts';
import { type AutocastDType, autocastPlan } from '../../passes/autocast.ts';
import type { Tensor } from './tensor.ts';

/** The region's dtype, or null outside any region (or inside `autocast(false, fn)`). */
let active: AutocastDType | null = null;
/** Open regions, enabled or not: the cast cache lives until the outermost one ends. */
let depth = 0;
/** Casts of weights (leaves that require grad) made in the open region, by tensor and dtype, with the version they were made at. */
const leafCasts = new Map<Tensor, Map<DType, { version: number; cast: Tensor }>>();

/** The autocast dtype eager ops and compiled calls use now (undefined outside autocast). */
export function autocastState(): AutocastDType | undefined {
  return active ?? undefined;
}

/** Checks an autocast dtype given from code: only f16 computes below f32 in kiln for now. */
export function checkAutocastDType(dtype: unknown, where: string): AutocastDType {
  if (dtype === 'f16') return dtype;
  const hint = dtype === 'bf16' || dtype === 'bfloat16' ? ': kiln has no bf16 compute on WebGPU yet' : '';
  throw new KilnError('KILN_E011', `${where} takes 'f16', got ${JSON.stringify(dtype)}${hint}`);
}

/**
 * Runs `fn` with eager ops autocast to `dtype` (torch.autocast(device_type, dtype)); `false` turns
 * autocast off inside an enclosing region (torch's enabled=False). The previous state comes back when
 * fn returns or throws, or, for an async fn, when its promise settles: ops another task runs while it
 * awaits see the region too, as with noGrad().
 */
export function autocast<T>(dtype: AutocastDType | false, fn: () => T): T {
  const enabled = dtype === false ? null : checkAutocastDType(dtype, 'autocast()');
  const before = active;
  active = enabled;
  depth++;
  const exit = () => {
    active = before;
    if (--depth === 0) leafCasts.clear();
  };
  let result: T;
  try {
    result = fn();
  } catch (e) {
    exit();
    throw e;
  }
  if (result instanceof Promise) return result.finally(exit) as T;
  exit();
  return result;
}

/** How dispatch runs one cast: eagerly, recorded for backward() like any op. */
export type RunCast = (x: Tensor, dtype: DType, loc: SourceLoc | undefined) => Tensor;

/** An eager op's operands as autocast wants them: cast where its lists say (none outside a region). */
export function autocastOperands<A extends Tensor | number>(op: string, inputs: readonly A[], attrs: Attrs, loc: SourceLoc | undefined, runCast: RunCast): (A | Tensor)[] {
  if (!active || op === 'cast') return [...inputs];
  const plan = autocastPlan(op, inputs.map((x) => (typeof x === 'number' ? x : x.type)), attrs, active);
  return inputs.map((x, i) => {
    const to = plan.targets[i];
    if (typeof x === 'number' || to === undefined || x.dtype === to) return x;
    if (!x.requiresGrad || x.gradFn) return runCast(x, to, loc); // torch caches only leaves that require grad: weights
    const cached = leafCasts.get(x)?.get(to);
    // A cast whose tape an earlier backward() freed is made again, so a second backward can pass through it.
    if (cached && cached.version === x.version && cached.cast.gradFn?.inputs !== null) return cached.cast;
    const cast = runCast(x, to, loc);
    (leafCasts.get(x) ?? leafCasts.set(x, new Map()).get(x)!).set(to, { version: x.version, cast });
    return cast;
  });
}
