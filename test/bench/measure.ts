// How the benchmark times GPU work: a warm-up, then batches of back-to-back runs, each batch timed by
// the wall clock until the queue reports it done; the median over batches, per run, and the spread.

export interface Timing {
  /** Median milliseconds per run. */
  readonly medianMs: number;
  /** 10th and 90th percentile of the per-run times over batches. */
  readonly p10Ms: number;
  readonly p90Ms: number;
  readonly batches: number;
  readonly runsPerBatch: number;
}

export interface MeasureOptions {
  /** Wall-clock budget for the timed part, in ms (the batch size adapts to it). */
  readonly budgetMs?: number;
  readonly minBatches?: number;
}

let defaults: Required<MeasureOptions> = { budgetMs: 2000, minBatches: 7 };

/** Changes the budget of every later measure() that does not set its own (`--smoke` shortens it); returns the old one. */
export function setMeasureDefaults(opts: MeasureOptions): Required<MeasureOptions> {
  const previous = defaults;
  defaults = { ...defaults, ...opts };
  return previous;
}

/**
 * Times `run` (which enqueues GPU work; awaited if it returns a promise, without waiting for the GPU) with `done` (resolves when the queue is
 * idle). The first batch sizes the rest so each takes about a tenth of the budget.
 */
export async function measure(run: () => unknown, done: () => Promise<unknown>, opts: MeasureOptions = {}): Promise<Timing> {
  const budget = opts.budgetMs ?? defaults.budgetMs;
  const minBatches = opts.minBatches ?? defaults.minBatches;
  for (let i = 0; i < 3; i++) await run(); // warm-up: pipelines, bind groups, caches
  await done();
  let t = performance.now();
  await run();
  await done();
  const once = Math.max(performance.now() - t, 0.001);
  const runsPerBatch = Math.max(1, Math.min(200, Math.floor(budget / 10 / once)));
  const perRun: number[] = [];
  const deadline = performance.now() + budget;
  while (perRun.length < minBatches || (performance.now() < deadline && perRun.length < 50)) {
    t = performance.now();
    for (let i = 0; i < runsPerBatch; i++) await run();
    await done();
    perRun.push((performance.now() - t) / runsPerBatch);
  }
  perRun.sort((a, b) => a - b);
  const at = (q: number) => perRun[Math.min(perRun.length - 1, Math.floor(q * perRun.length))];
  return { medianMs: at(0.5), p10Ms: at(0.1), p90Ms: at(0.9), batches: perRun.length, runsPerBatch };
}

/**
 * Times several variants in rounds, each round running every variant once (a batch of back-to-back
 * runs each, in an order that rotates from round to round), so drift of the machine (clocks, other
 * tenants) falls on all variants alike instead of on whichever ran last. Returns one Timing each.
 */
export async function measureInterleaved(runs: readonly (() => unknown)[], done: () => Promise<unknown>, opts: MeasureOptions = {}): Promise<Timing[]> {
  const budget = opts.budgetMs ?? defaults.budgetMs;
  const minBatches = opts.minBatches ?? defaults.minBatches;
  for (const run of runs) for (let i = 0; i < 3; i++) await run();
  await done();
  const sizes: number[] = [];
  for (const run of runs) {
    const t = performance.now();
    await run();
    await done();
    const once = Math.max(performance.now() - t, 0.001);
    sizes.push(Math.max(1, Math.min(200, Math.floor(budget / 10 / runs.length / once))));
  }
  const perRun: number[][] = runs.map(() => []);
  const deadline = performance.now() + budget;
  for (let round = 0; round < minBatches || (performance.now() < deadline && round < 50); round++) {
    for (let k = 0; k < runs.length; k++) {
      const v = (k + round) % runs.length;
      const t = performance.now();
      for (let i = 0; i < sizes[v]; i++) await runs[v]();
      await done();
      perRun[v].push((performance.now() - t) / sizes[v]);
    }
  }
  return perRun.map((times, v) => {
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    return { medianMs: at(0.5), p10Ms: at(0.1), p90Ms: at(0.9), batches: times.length, runsPerBatch: sizes[v] };
  });
}
