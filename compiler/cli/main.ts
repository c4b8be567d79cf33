// The kiln CLI: a table of commands, each with its flags, help and example. bin/kiln.mjs bundles this
// with the user's model file and calls main().

import { resolve } from 'node:path';
import { KilnError } from '../../ir/errors.ts';
import { useSourceArgNames } from '../tracer.ts';
import { sourceArgNames } from './arg-names.ts';
import { type CommandSpec, type ParsedArgs, formatHelp, parseArgs, usageError } from './args.ts';
import { dumpCommand } from './dump.ts';
import { evalCommand } from './eval.ts';
import { explainCommand } from './explain.ts';
import { generateCommand } from './generate.ts';
import { kernelsCommand } from './kernels.ts';
import { refuseOutputOverInput } from './paths.ts';
import { profileCommand } from './profile.ts';
import { reportError } from './report.ts';
import { runCommand } from './run.ts';
import { serveCommand } from './serve.ts';

export interface Command {
  readonly spec: CommandSpec;
  run(args: ParsedArgs, model: unknown): Promise<void>;
}

const COMMANDS: readonly Command[] = [runCommand, evalCommand, generateCommand, dumpCommand, explainCommand, kernelsCommand, profileCommand, serveCommand];

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

/**
 * Runs the CLI; returns the process exit status. Errors print as one line on stderr. `modelPath` is the
 * file bin/kiln.mjs bundled as `model`, checked to be the command's MODEL.ts.
 */
export async function main(argv: readonly string[], model: unknown, modelPath?: string | null): Promise<number> {
  const [name, ...rest] = argv;
  useSourceArgNames(sourceArgNames); // forward()'s parameters by the names in the user's source, not the bundle's
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
    if (command.spec.positionals[0] === 'MODEL.ts' && modelPath && resolve(args.positionals[0]) !== modelPath) {
      throw usageError(name, `MODEL.ts is ${args.positionals[0]}, but kiln loaded ${modelPath} (a flag's value?); put MODEL.ts right after the command`);
    }
    refuseOutputOverInput(command.spec, args);
    await command.run(args, model);
    return 0;
  } catch (e) {
    reportError(e);
    return 1;
  }
}
