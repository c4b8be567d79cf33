// A progress line for long CPU-bound work (kiln profile, kiln run, npm run train, npm run sample): a bar,
// the count, the rate and the time left. On a terminal it is one line rewritten in place (\r); elsewhere (a pipe, a log file, CI)
// a plain line now and then, so a long run still shows it is alive without filling the log.

/** `45s`, `3m 05s`, `2h 07m`: whole seconds, the two largest units. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** `3.2 it/s`, or `4.1 s/it` when slower than one a second; `? it/s` before any is done. */
export function formatRate(done: number, elapsedMs: number, unit = 'it'): string {
  if (done <= 0 || elapsedMs <= 0) return `? ${unit}/s`;
  const perSecond = (done * 1000) / elapsedMs;
  if (perSecond >= 1) return `${perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1)} ${unit}/s`;
  return `${(1 / perSecond).toFixed(1)} s/${unit}`;
}

/** `[#######.......] 8/20`, the bar `width` characters wide. */
export function progressBar(done: number, total: number, width = 24): string {
  const filled = Math.round((width * Math.min(Math.max(done, 0), total)) / Math.max(total, 1));
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

/**
 * `[#######.......] 8/20  2.1 it/s  eta 6s`: `done` of `total` after `elapsedMs`, the rate and the time
 * left at that rate (`done` counts only the work timed by `elapsedMs`; `base` of `total` were done before it).
 */
export function progressText(done: number, total: number, elapsedMs: number, options: { unit?: string; width?: number; base?: number } = {}): string {
  const base = options.base ?? 0;
  return `${progressBar(done, total, options.width)}  ${formatRate(done - base, elapsedMs, options.unit)}  eta ${timeLeft(done, total, elapsedMs, base)}`;
}

/** The time left for `total - done` more at the rate of the `done - base` that took `elapsedMs`: `6s`, `0s` when done, `?` before any. */
export function timeLeft(done: number, total: number, elapsedMs: number, base = 0): string {
  if (done >= total) return '0s';
  const ran = done - base;
  return formatDuration(ran > 0 ? ((total - done) * elapsedMs) / ran / 1000 : NaN);
}

/** Where a progress line goes: a terminal (isTTY) gets it in place, anything else plain lines. */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

/** One progress line on `stream` (stderr by default): rewritten in place on a terminal, a plain line every `plainEveryMs` elsewhere. */
export class ProgressLine {
  private readonly start: number;
  private lastPlain: number;
  private width = 0;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly options: { stream?: ProgressStream; unit?: string; plainEveryMs?: number; now?: () => number } = {},
  ) {
    this.start = this.now();
    this.lastPlain = this.start;
  }

  private now(): number {
    return this.options.now?.() ?? performance.now();
  }

  private get stream(): ProgressStream | undefined {
    if (this.options.stream) return this.options.stream;
    if (typeof process === 'undefined') return undefined;
    // Under the `kiln` launcher stderr is a pipe through its Dawn-warning filter (bin/dawn-filter.mjs), which says whether the real one is a terminal.
    if (process.env.KILN_STDERR_TTY && !process.stderr.isTTY) return { isTTY: true, write: (t: string) => process.stderr.write(t) };
    return process.stderr;
  }

  /** Shows `done` of the total. */
  update(done: number): void {
    const stream = this.stream;
    if (!stream) return;
    const now = this.now();
    const text = `${this.label} ${progressText(done, this.total, now - this.start, { unit: this.options.unit })}`;
    if (stream.isTTY) {
      stream.write(`\r${text}\x1b[K`);
      this.width = text.length;
    } else if (now - this.lastPlain >= (this.options.plainEveryMs ?? 10_000)) {
      stream.write(`${text}\n`);
      this.lastPlain = now;
    }
  }

  /** Clears the line on a terminal (the command's own output follows). */
  finish(): void {
    const stream = this.stream;
    if (stream?.isTTY && this.width > 0) stream.write(`\r${' '.repeat(this.width)}\r`);
    this.width = 0;
  }
}
