// WebGPU reports errors asynchronously (error scopes resolve later; device loss and uncaptured errors
// arrive as events). ErrorWatch collects them all and hands them back as KilnErrors at the next
// await point (`check()`), or synchronously before new work (`throwIfFailed()`), so none is lost.

import { type ErrorCode, KilnError, type SourceLoc } from '../../ir/errors.ts';

/** How to word a GPU error for the user: which op, which tensor, which source line. */
export interface ErrorContext {
  /** e.g. `creating the pipeline for %12 = matmul(...)`. */
  readonly what: string;
  readonly loc?: SourceLoc;
  /** Maps a Dawn message to a better context (e.g. the kernel whose label the message names). */
  readonly refine?: (message: string) => { what: string; loc?: SourceLoc } | undefined;
}

export class ErrorWatch {
  private readonly caught: KilnError[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private lost: KilnError | null = null;
  private destroying = false;

  constructor(private readonly device: GPUDevice) {
    device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      this.caught.push(new KilnError(error?.constructor?.name === 'GPUOutOfMemoryError' ? 'KILN_E009' : 'KILN_E010', `WebGPU error outside kiln's checks: ${error.message}`));
    });
  }

  /** Runs `fn` inside validation and out-of-memory scopes; what they catch is reported as `context`. */
  scoped<T>(context: ErrorContext, fn: () => T): T {
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    try {
      return fn();
    } finally {
      this.track(this.device.popErrorScope(), 'KILN_E010', context);
      this.track(this.device.popErrorScope(), 'KILN_E009', context);
    }
  }

  /** Reports a rejected WebGPU promise (e.g. createComputePipelineAsync) as a KilnError. */
  wrap(code: ErrorCode, context: ErrorContext, error: unknown): KilnError {
    if (error instanceof KilnError) return error;
    return toKilnError(code, context, error instanceof Error ? error.message : String(error));
  }

  private track(scope: Promise<GPUError | null>, code: ErrorCode, context: ErrorContext): void {
    const done = scope.then(
      (error) => {
        if (error) this.caught.push(toKilnError(code, context, error.message));
      },
      (error: unknown) => {
        if (!this.destroying) this.caught.push(toKilnError('KILN_E008', context, String(error)));
      },
    );
    this.inflight.add(done);
    void done.finally(() => this.inflight.delete(done));
  }

  /** A check the GPU answers later (bad indices an eager kernel met): its error, if any, is reported as the others. */
  watch(found: Promise<KilnError | null>): void {
    const done = found.then((error) => {
      if (error) this.caught.push(error);
    });
    this.inflight.add(done);
    void done.finally(() => this.inflight.delete(done));
  }

  fatal(error: KilnError): void {
    if (!this.destroying) this.lost = error;
  }

  /** The device is being destroyed on purpose: its loss is no error. */
  closing(): void {
    this.destroying = true;
  }

  /** Throws the first error already known; call before queuing new work. */
  throwIfFailed(): void {
    if (this.lost) throw this.lost;
    const first = this.caught.shift();
    if (first) {
      this.caught.length = 0;
      throw first;
    }
  }

  /** Waits for every pending error scope, then throws the first error, if any. */
  async check(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    this.throwIfFailed();
  }
}

function toKilnError(code: ErrorCode, context: ErrorContext, message: string): KilnError {
  const refined = context.refine?.(message);
  const what = refined?.what ?? context.what;
  const loc = refined?.loc ?? context.loc;
  const kind = code === 'KILN_E009' ? 'out of GPU memory' : code === 'KILN_E008' ? 'device lost' : 'WebGPU rejected it';
  return new KilnError(code, `${what}: ${kind}: ${message.trim()}`, loc);
}
