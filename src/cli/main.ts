// m1 — the command line. Thin: parses flags, calls the layers below, shows progress.
import { Command, CommanderError } from 'commander';
import { UserError } from '../util/errors.js';
import { registerDemo } from './commands/demo.js';
import { registerDoctor } from './commands/doctor.js';
import { registerEval } from './commands/eval.js';
import { registerGenerate } from './commands/generate.js';
import { registerGrade } from './commands/grade.js';
import { registerModelCommands } from './commands/model.js';
import { registerServe } from './commands/serve.js';
import { registerTrain } from './commands/train.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('m1')
    .description('m1ts: hybrid Mamba/attention reasoning models of the M1 kind — convert, train, generate, evaluate')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  registerModelCommands(program);
  registerGenerate(program);
  registerDoctor(program);
  registerGrade(program);
  registerEval(program);
  registerServe(program);
  registerTrain(program);
  registerDemo(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed its message (unknown flag, missing value, --help, --version)
      return e.exitCode;
    }
    if (e instanceof UserError) {
      process.stderr.write(`m1: error: ${e.message}\n`);
      return 1;
    }
    const err = e as Error;
    process.stderr.write(`m1: internal error: ${err.message}\n${process.env['M1_DEBUG'] ? err.stack ?? '' : '(set M1_DEBUG=1 for a stack trace)'}\n`);
    return 2;
  }
}
