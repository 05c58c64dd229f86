/** What every command shares: where its output goes (swappable in tests) and how flags are parsed. */
import { Command, CommanderError, InvalidArgumentError } from 'commander';

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

export const defaultIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** A commander argument parser accepting whole numbers >= min. */
export function wholeNumber(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) {
      throw new InvalidArgumentError(`expected a whole number >= ${min}.`);
    }
    return n;
  };
}

/**
 * Parses argv with a program built with `.exitOverride()`. Returns undefined when the command should run, or the
 * exit code to return at once: 0 after --help/--version, 2 after a usage error (commander has printed it).
 */
export function parseCommand(program: Command, argv: string[]): number | undefined {
  try {
    program.parse(argv, { from: 'user' });
    return undefined;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
}

/** A program that prints through `io` and leaves exiting to its caller: parseCommand turns help and usage errors into exit codes. */
export function cliProgram(name: string, io: CliIo): Command {
  return new Command()
    .name(name)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
}

/** Runs `main` when its file is the one node was started with (`npm run x` runs `node dist/cli/x.js`), keeping its exit code. */
export function runAsScript(mod: NodeModule, main: () => Promise<number>): void {
  if (require.main !== mod) return;
  void main().then((code) => {
    process.exitCode = code;
  });
}
