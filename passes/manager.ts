// The pass manager: named passes in named stages, each switchable by name; the verifier runs after
// every pass, and the IR after each stage is kept for dumps (`kiln dump --stage`).

import { KilnError } from '../ir/errors.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { log } from '../ir/log.ts';
import { verifyGraph } from '../ir/verify.ts';

export const STAGES = ['traced', 'canonical', 'fused', 'lowered'] as const;
export type Stage = (typeof STAGES)[number];

export interface Pass {
  readonly name: string;
  /** The stage this pass belongs to; passes run in stage order, then list order. */
  readonly stage: Exclude<Stage, 'traced'>;
  readonly description: string;
  run(graph: Graph, ctx: PassContext): Graph;
}

/** A decision a pass took or declined at one place, with its reason: what `kiln explain` shows. */
export interface Decision {
  readonly pass: string;
  /** The node the decision is about (for attention fusion: the softmax of the site). */
  readonly site: Node;
  readonly applied: boolean;
  readonly rule?: string;
  /** The kernel picked, when applied (flash_causal, flash_masked, flash). */
  readonly kernel?: string;
  readonly reason: string;
}

/** What passes may know beyond the graph. */
export interface PassContext {
  /** Values of `buffer` leaves by state-dict name: registered buffers are compile-time constants. */
  readonly bufferValue: (name: string) => HostTensor | undefined;
  /** How fused attention scales: after q k^T ("post"), or q and k each by sqrt(scale) first ("pre_qk"). */
  readonly attentionScaling: 'post' | 'pre_qk';
  /** Autocast (passes/autocast.ts): the dtype matmul and attention run in; absent, every op runs in its operands' dtype. */
  readonly autocast?: 'f16';
  /** Passes append their decisions here. */
  readonly decisions: Decision[];
}

export interface PassOptions {
  /** Pass name -> on/off; passes not named keep their default (on). */
  readonly passes?: Readonly<Record<string, boolean>>;
  readonly bufferValue?: (name: string) => HostTensor | undefined;
  readonly attentionScaling?: 'post' | 'pre_qk';
  readonly autocast?: 'f16';
}

export interface PassResult {
  readonly graph: Graph;
  /** The graph as it stood at the end of each stage. */
  readonly stages: ReadonlyMap<Stage, Graph>;
  /** Passes that ran, in order. */
  readonly ran: readonly string[];
  readonly decisions: readonly Decision[];
}

/** Rejects switches for passes the pipeline does not have (a typo would otherwise change nothing). */
export function checkPassOptions(pipeline: readonly Pass[], options: PassOptions): void {
  const known = new Set(pipeline.map((p) => p.name));
  for (const name of Object.keys(options.passes ?? {})) {
    if (!known.has(name)) throw new KilnError('KILN_E011', `unknown pass "${name}"; passes are: ${[...known].join(', ')}`);
  }
}

export function runPasses(traced: Graph, pipeline: readonly Pass[], options: PassOptions = {}): PassResult {
  checkPassOptions(pipeline, options);
  const stages = new Map<Stage, Graph>([['traced', traced]]);
  const ran: string[] = [];
  const ctx: PassContext = {
    bufferValue: options.bufferValue ?? (() => undefined),
    attentionScaling: options.attentionScaling ?? 'post',
    ...(options.autocast ? { autocast: options.autocast } : {}),
    decisions: [],
  };
  let graph = traced;
  for (const stage of STAGES.slice(1)) {
    for (const pass of pipeline.filter((p) => p.stage === stage)) {
      if (options.passes?.[pass.name] === false) continue;
      const [before, start] = [graph.nodes.length, performance.now()];
      graph = pass.run(graph, ctx);
      const ms = performance.now() - start;
      verifyGraph(graph, `pass ${pass.name}`);
      ran.push(pass.name);
      log('passes', `${stage}/${pass.name}: ${before} -> ${graph.nodes.length} nodes`, { ms: ms.toFixed(2) });
    }
    stages.set(stage, graph);
  }
  return { graph, stages, ran, decisions: ctx.decisions };
}
