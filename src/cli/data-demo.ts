/**
 * `npm run data:demo -- [--out DIR] [--per-class N] [--test-per-class N] [--size S] [--seed K]`
 * Writes the small synthetic demo dataset (not medical data) in the Kaggle layout.
 */
import { type CliIo, defaultIo, parseCommand, wholeNumber, cliProgram, runAsScript } from './common';
import { DEMO_DEFAULTS, DEMO_DISCLAIMER, generateDemoDataset } from '../data/demo';

export type { CliIo };

interface Flags {
  out: string;
  perClass: number;
  testPerClass: number;
  size: number;
  seed: number;
}

/** Runs the command; returns the exit code (0 ok, 1 failed, 2 bad usage). */
export async function main(argv: string[] = process.argv.slice(2), io: CliIo = defaultIo): Promise<number> {
  const program = cliProgram('data:demo', io)
    .description('Generate a small SYNTHETIC chest-radiograph-like dataset (not medical data) for trying the workflow.')
    .option('--out <dir>', 'destination folder', 'data/demo')
    .option('--per-class <n>', 'training images per class', wholeNumber(1), DEMO_DEFAULTS.perClass)
    .option('--test-per-class <n>', 'test images per class', wholeNumber(0), DEMO_DEFAULTS.testPerClass)
    .option('--size <px>', 'image side in pixels', wholeNumber(16), DEMO_DEFAULTS.size)
    .option('--seed <k>', 'random seed (same seed, same files)', wholeNumber(0), DEMO_DEFAULTS.seed);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<Flags>();
  const started = Date.now();
  try {
    const result = await generateDemoDataset({
      outDir: flags.out,
      perClass: flags.perClass,
      testPerClass: flags.testPerClass,
      size: flags.size,
      seed: flags.seed,
    });
    const total = Object.values(result.counts).reduce((a, b) => a + b, 0);
    io.out(
      `Wrote ${total} synthetic images (${flags.size}x${flags.size}, seed ${flags.seed}) to ${result.root} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    for (const [key, n] of Object.entries(result.counts)) io.out(`  ${key}: ${n}`);
    io.out(DEMO_DISCLAIMER);
    return 0;
  } catch (err) {
    io.err(`data:demo: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }
}

runAsScript(module, main);
