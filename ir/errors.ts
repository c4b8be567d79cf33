// Every user-facing error: a stable code, a one-line message, the user's source line.

export interface SourceLoc {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  /** The user's source line, trimmed, when it could be read. */
  readonly text?: string;
}

export function formatLoc(loc: SourceLoc): string {
  return `${loc.file}:${loc.line}:${loc.col}`;
}

/** Codes are stable: tests and docs/errors.md refer to them. */
export const ERROR_CODES = {
  KILN_E001: 'shape mismatch',
  KILN_E002: 'dtype mismatch',
  KILN_E003: 'tensor value read while tracing',
  KILN_E004: 'unknown op',
  KILN_E005: 'bad checkpoint file',
  KILN_E006: 'state dict does not match the model',
  KILN_E007: 'no WebGPU adapter',
  KILN_E008: 'WebGPU device lost',
  KILN_E009: 'GPU out of memory',
  KILN_E010: 'WebGPU validation error',
  KILN_E011: 'invalid argument',
  KILN_E012: 'IR verification failed',
  KILN_E013: 'IR text parse error',
  KILN_E014: 'input does not match the compiled signature',
  KILN_E015: 'bad command-line usage',
  KILN_E016: 'model file could not be loaded',
  KILN_E017: 'output would overwrite an input',
  KILN_E019: 'file system error',
  KILN_E020: 'error kiln did not raise itself',
  KILN_E021: 'device has no shader-f16',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly loc?: SourceLoc;
  /** The message without code and location, for callers that add their own context. */
  readonly detail: string;

  /** Lines after the first of a multi-line cause (e.g. the WGSL compiler's notes); the message keeps one line. */
  readonly notes: string;

  constructor(code: ErrorCode, detail: string, loc?: SourceLoc) {
    const [first, ...rest] = detail.split('\n');
    super(`${code} ${loc ? formatLoc(loc) + ': ' : ''}${first.trimEnd()}`);
    this.name = 'KilnError';
    this.code = code;
    this.detail = first.trimEnd();
    this.notes = rest.join('\n');
    this.loc = loc;
  }

  /** The same error, pinned to a source line if it has none yet. */
  at(loc: SourceLoc | undefined): KilnError {
    if (this.loc || !loc) return this;
    const e = new KilnError(this.code, this.notes ? `${this.detail}\n${this.notes}` : this.detail, loc);
    e.stack = this.stack;
    return e;
  }
}

export function fail(code: ErrorCode, detail: string, loc?: SourceLoc): never {
  throw new KilnError(code, detail, loc);
}
