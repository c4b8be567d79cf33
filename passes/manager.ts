// The pass manager: named passes in named stages, each switchable by name; the verifier runs after
// every pass, and the IR after each stage is kept for dumps (`kiln dump --stage`).

import { KilnError } from '../ir/errors.ts';
import type { Graph } from '../ir/graph.ts';
import { verifyGraph } from '../ir/verify.ts';

export const STAGES = ['traced', 'canonical', 'fused', 'lowered'] as const;
export type Stage = (typeof STAGES)[number];

export interface Pass {
  readonly name: string;
  /** The stage this pass belongs to; passes run in stage order, then list order. */
  readonly stage: Exclude<Stage, 'traced'>;
  readonly description: string;
  run(graph: Graph): Graph;
}

export interface PassOptions {
  /** Pass name -> on/off; passes not named keep their default (on). */
  readonly passes?: Readonly<Record<string, boolean>>;
}

export interface PassResult {
  readonly graph: Graph;
  /** The graph as it stood at the end of each stage. */
  readonly stages: ReadonlyMap<Stage, Graph>;
  /** Passes that ran, in order. */
  readonly ran: readonly string[];
}

export function runPasses(traced: Graph, pipeline: readonly Pass[], options: PassOptions = {}): PassResult {
  const known = new Set(pipeline.map((p) => p.name));
  for (const name of Object.keys(options.passes ?? {})) {
    if (!known.has(name)) throw new KilnError('KILN_E011', `unknown pass "${name}"; passes are: ${[...known].join(', ')}`);
  }
  const stages = new Map<Stage, Graph>([['traced', traced]]);
  const ran: string[] = [];
  let graph = traced;
  for (const stage of STAGES.slice(1)) {
    for (const pass of pipeline.filter((p) => p.stage === stage)) {
      if (options.passes?.[pass.name] === false) continue;
      graph = pass.run(graph);
      verifyGraph(graph, `pass ${pass.name}`);
      ran.push(pass.name);
    }
    stages.set(stage, graph);
  }
  return { graph, stages, ran };
}
