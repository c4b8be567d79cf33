// The kiln CLI: a table of commands, each with its flags, help and example. bin/kiln.mjs bundles this
// with the user's model file and calls main().

import { KilnError } from '../../ir/errors.ts';
import { type CommandSpec, type ParsedArgs, formatHelp, parseArgs, usageError } from './args.ts';
import { dumpCommand } from './dump.ts';
import { evalCommand } from './eval.ts';
import { explainCommand } from './explain.ts';
import { kernelsCommand } from './kernels.ts';
import { refuseOutputOverInput } from './paths.ts';
import { profileCommand } from './profile.ts';
import { runCommand } from './run.ts';
import { serveCommand } from './serve.ts';

export interface Command {
  readonly spec: CommandSpec;
  run(args: ParsedArgs, model: unknown): Promise<void>;
}

const COMMANDS: readonly Command[] = [runCommand, evalCommand, dumpCommand, explainCommand, kernelsCommand, profileCommand, serveCommand];

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length)) + 2;
  return [
    'kiln: a compiler-style graph fusion framework for WebGPU',
    '',
    'usage: kiln COMMAND MODEL.ts [flags]    (MODEL.ts default-exports (config) => Module)',
    '       kiln serve FOLDER [--port N]      (a static page, e.g. examples/browser)',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`),
    '',
    'kiln COMMAND --help lists every flag of a command, with an example.',
  ].join('\n');
}

/** Runs the CLI; returns the process exit status. Errors print as one line on stderr. */
export async function main(argv: readonly string[], model: unknown): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      console.log(overview());
      return name === undefined ? 2 : 0;
    }
    const command = COMMANDS.find((c) => c.spec.name === name);
    if (!command) throw new KilnError('KILN_E015', `unknown command "${name}"; commands: ${COMMANDS.map((c) => c.spec.name).join(', ')} (kiln --help)`);
    if (rest.includes('--help') || rest.includes('-h')) {
      console.log(formatHelp(command.spec));
      return 0;
    }
    const args = parseArgs(command.spec, rest);
    if (command.spec.positionals[0] === 'MODEL.ts' && !model) throw usageError(name, `${command.spec.positionals[0]} must be a .ts or .js file`);
    refuseOutputOverInput(command.spec, args);
    await command.run(args, model);
    return 0;
  } catch (e) {
    console.error(oneLine(e));
    return 1;
  }
}

function oneLine(e: unknown): string {
  if (e instanceof KilnError) return e.message.split('\n')[0];
  const err = e as Error;
  const where = userFrame(err.stack);
  return `error: ${where ? where + ': ' : ''}${(err?.message ?? String(e)).split('\n')[0]}`;
}

/** The first stack frame outside kiln, for errors kiln did not raise itself (e.g. an assert in the model). */
function userFrame(stack: string | undefined): string | undefined {
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?[^()\s]+):(\d+):\d+\)?$/.exec(line.trim());
    if (m && !m[1].includes('node_modules') && !m[1].startsWith('node:')) {
      return `${m[1].replace(/^file:\/\//, '').replace(process.cwd() + '/', '')}:${m[2]}`;
    }
  }
  return undefined;
}
