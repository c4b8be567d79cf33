// The default pipeline, in stage order. A pass is added here once, by name.
import { deadCodeElimination } from './dce.ts';
import type { Pass } from './manager.ts';

export const DEFAULT_PIPELINE: readonly Pass[] = [deadCodeElimination];

export { runPasses, STAGES, type Pass, type PassOptions, type PassResult, type Stage } from './manager.ts';
