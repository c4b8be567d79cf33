// Kernels with alternatives, and the picks measurement made among them (torch.compile's
// mode="max-autotune"). A lowering with alternatives declares a TuningSite: its candidates for one
// request (matmul: its tilings, codegen/wgsl/linalg.ts) and the one its fixed rule picks. Without
// autotune the rule picks, as before. With it, runtime/webgpu/autotune.ts times every candidate on the
// device at the real shapes, records the fastest under a tuned copy of the device's limits, and lowers
// with that copy: the lowering asks `pickOf(req)` and finds the measured choice.
//
// A pick is keyed by the request (op, operand types, attrs, output type), so equal products share one
// measurement; the tuned limits object is one per device, so picks never cross devices.

import type { KernelLimits } from '../ir/limits.ts';
import { formatType } from '../ir/types.ts';
import type { KernelPlan, KernelRequest } from './wgsl/plan.ts';

/** One alternative kernel for a request. */
export interface Candidate {
  readonly name: string;
  readonly plan: () => KernelPlan;
}

/** A lowering's alternatives: its candidates for a request (none: nothing to choose), and the rule's pick among them. */
export interface TuningSite {
  readonly op: string;
  candidates(req: KernelRequest): readonly Candidate[];
  rule(req: KernelRequest): string;
}

/** What measuring the candidates of one request found. */
export interface Pick {
  /** The fastest candidate: the lowering uses it. */
  readonly choice: string;
  /** The rule's pick, for comparison. */
  readonly rule: string;
  /** Nanoseconds per run of each candidate (the best of its timed runs). */
  readonly ns: Readonly<Record<string, number>>;
  /** How the times were taken: `timestamp-query` or `wall-clock`. */
  readonly clock: string;
  /** Measured in this process, or read from the disk cache. */
  readonly from: 'measured' | 'disk cache';
}

/** The key of a request's pick: what the kernel computes, at which types. */
export function tuningKey(op: string, req: KernelRequest): string {
  const operands = req.inputs.map((x) => (typeof x === 'number' ? String(x) : formatType(x))).join(', ');
  const attrs = Object.entries(req.attrs).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ');
  return `${op}(${operands})${attrs ? ` {${attrs}}` : ''} : ${formatType(req.out)}`;
}

const picksByLimits = new WeakMap<KernelLimits, Map<string, Pick>>();
const tunedByBase = new WeakMap<KernelLimits, KernelLimits>();

/** The tuned copy of a device's limits (one per device): lowering with it uses the picks recorded under it. */
export function tunedLimits(base: KernelLimits): KernelLimits {
  let tuned = tunedByBase.get(base);
  if (!tuned) {
    tuned = { ...base };
    tunedByBase.set(base, tuned);
    picksByLimits.set(tuned, new Map());
  }
  return tuned;
}

/** The picks recorded under tuned limits (empty for a device's own limits: the rule picks). */
export function picksOf(limits: KernelLimits | undefined): Map<string, Pick> {
  return (limits && picksByLimits.get(limits)) ?? new Map();
}

/** The measured choice for this request, when it was lowered with tuned limits and measured. */
export function pickOf(op: string, req: KernelRequest): string | undefined {
  return req.limits ? picksByLimits.get(req.limits)?.get(tuningKey(op, req))?.choice : undefined;
}
