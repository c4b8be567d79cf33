// Ctrl-C (SIGINT) or SIGTERM during training: one line naming the iteration and the last checkpoint,
// exit status 128 + the signal's number, and never in the middle of a checkpoint save. A signal during
// a save waits for it to finish (the write is atomic either way: runtime/files.ts); any other stops
// the run at once. SIGKILL cannot be caught, and still leaves the old checkpoint or the new one.

const SIGNALS = { SIGINT: 2, SIGTERM: 15 } as const;
type Signal = keyof typeof SIGNALS;

export class TrainingInterrupts {
  /** The iteration the run is at, for the exit line. */
  iter = 0;
  /** The checkpoint on disk that this run wrote or resumed from. */
  checkpoint: { path: string; iter: number } | null = null;
  private saves = 0;
  private pending: Signal | null = null;
  private readonly handler = (signal: Signal) => this.interrupted(signal);

  /** Listens for SIGINT and SIGTERM until dispose(); `beforeExit` runs before the line is printed (e.g. ends a progress bar). */
  constructor(private readonly beforeExit: () => void = () => undefined) {
    for (const s of Object.keys(SIGNALS) as Signal[]) process.on(s, this.handler);
  }

  dispose(): void {
    for (const s of Object.keys(SIGNALS) as Signal[]) process.off(s, this.handler);
  }

  /** Runs a save; a signal that arrives meanwhile takes effect once it has finished. */
  async saving<T>(save: () => Promise<T>): Promise<T> {
    this.saves++;
    try {
      return await save();
    } finally {
      this.saves--;
      if (this.pending && this.saves === 0) this.exit(this.pending);
    }
  }

  /** The one line printed on the way out. */
  message(signal: Signal): string {
    const last = this.checkpoint ? `last checkpoint: ${this.checkpoint.path} (iter ${this.checkpoint.iter})` : 'no checkpoint written';
    return `kiln train: interrupted (${signal}) at iter ${this.iter}; ${last}`;
  }

  private interrupted(signal: Signal): void {
    if (this.saves > 0) this.pending ??= signal;
    else this.exit(signal);
  }

  private exit(signal: Signal): never {
    this.beforeExit();
    process.stderr.write(`${this.message(signal)}\n`);
    process.exit(128 + SIGNALS[signal]);
  }
}
