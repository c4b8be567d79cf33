// Types of bin/dawn-filter.mjs, for the tests that import it.
export function wantsFilter(env?: Record<string, string | undefined>): boolean;
export function filterStream(input: NodeJS.ReadableStream & { setEncoding(e: string): unknown }, output: NodeJS.WritableStream): void;
export function runFiltered(script: string, args: string[]): Promise<number>;
export function relaunchFiltered(launcherUrl: string, args?: string[]): Promise<void>;
export const DAWN_HARMLESS_WARNINGS: readonly RegExp[];
export function withoutDawnWarnings(text: string): string;
