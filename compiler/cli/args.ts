// Strict command-line parsing: every flag is declared with a help line and an example; unknown flags are errors.

import { KilnError } from '../../ir/errors.ts';

export interface FlagSpec {
  readonly name: string;
  /** 'string' takes a value; 'boolean' does not. */
  readonly kind: 'string' | 'boolean';
  readonly help: string;
  readonly choices?: readonly string[];
  readonly default?: string;
  readonly required?: boolean;
  /** A string flag that takes several words (`--diff canonical fused`), joined with a space. */
  readonly values?: number;
  /** A file the command reads or writes: an output may not be one of the inputs (compiler/cli/paths.ts). */
  readonly file?: 'input' | 'output';
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly example: string;
  /** Positional arguments, by name (e.g. MODEL.ts). */
  readonly positionals: readonly string[];
  readonly flags: readonly FlagSpec[];
}

export interface ParsedArgs {
  readonly positionals: string[];
  readonly flags: Map<string, string | boolean>;
}

export function usageError(command: string, detail: string): KilnError {
  return new KilnError('KILN_E015', `kiln ${command}: ${detail}; see kiln ${command} --help`);
}

export function parseArgs(spec: CommandSpec, argv: readonly string[]): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string | boolean>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      positionals.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2);
    const flag = spec.flags.find((f) => f.name === name);
    if (!flag) throw usageError(spec.name, `unknown flag --${name}`);
    if (flag.kind === 'boolean') {
      if (inline !== undefined) throw usageError(spec.name, `--${name} takes no value`);
      flags.set(name, true);
      continue;
    }
    const count = flag.values ?? 1;
    const words = inline !== undefined ? [inline] : argv.slice(i + 1, i + 1 + count);
    if (inline === undefined) i += words.length;
    if (words.length < (inline !== undefined ? 1 : count) || words.some((w) => w.startsWith('--'))) {
      throw usageError(spec.name, `--${name} needs ${count === 1 ? 'a value' : `${count} values`}`);
    }
    const value = words.join(' ');
    if (flag.choices && !flag.choices.includes(value)) throw usageError(spec.name, `--${name} must be one of ${flag.choices.join(', ')}, got "${value}"`);
    flags.set(name, value);
  }
  if (positionals.length !== spec.positionals.length) {
    throw usageError(spec.name, `expects ${spec.positionals.join(' ') || 'no positional arguments'}, got ${positionals.length ? positionals.join(' ') : 'none'}`);
  }
  for (const f of spec.flags) {
    if (!flags.has(f.name) && f.default !== undefined) flags.set(f.name, f.default);
    if (f.required && !flags.has(f.name)) throw usageError(spec.name, `--${f.name} is required`);
  }
  return { positionals, flags };
}

export function formatHelp(spec: CommandSpec): string {
  const width = Math.max(...spec.flags.map((f) => f.name.length + (f.kind === 'string' ? 6 : 0)), 8) + 4;
  const lines = [`kiln ${spec.name}: ${spec.summary}`, '', `usage: ${spec.usage}`, '', 'flags:'];
  for (const f of spec.flags) {
    const left = `  --${f.name}${f.kind === 'string' ? ' VALUE' : ''}`;
    const extra = [f.choices ? `one of ${f.choices.join('|')}` : '', f.default !== undefined ? `default ${f.default}` : '', f.required ? 'required' : ''].filter(Boolean).join('; ');
    lines.push(`${left.padEnd(width + 2)}${f.help}${extra ? ` (${extra})` : ''}`);
  }
  lines.push(`  --help${' '.repeat(Math.max(1, width - 4))}this text`, '', `example: ${spec.example}`);
  return lines.join('\n');
}

export function stringFlag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}
