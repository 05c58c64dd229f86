/**
 * `npm run app -- [--run DIR] [--out DIR] [--quantize 16|8]`
 * Builds the static web app of a run (default: the newest run): drop a chest X-ray, see the probability, the
 * decision at the run's threshold and the Grad-CAM overlay. Opens from disk with no network.
 */
import * as path from 'path';
import { InvalidArgumentError } from 'commander';
import { type CliIo, defaultIo, parseCommand, cliProgram, runAsScript } from './common';
import { initBackend } from '../accel';
import { buildApp, checkRunDir, type BuildAppResult } from '../app/build';
import { QUANTIZE_BITS, type QuantizeBits } from '../app/quantize';
import { DEFAULT_RUNS_DIR } from '../runs/layout';
import { findLatestRun } from '../runs/read';

function quantizeBits(value: string): QuantizeBits {
  const n = Number(value) as QuantizeBits;
  if (!QUANTIZE_BITS.includes(n)) throw new InvalidArgumentError('expected 16 or 8.');
  return n;
}

function megabytes(bytes: number): string {
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(2)} MB`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

/** The lines the command prints about a built app. */
export function describeBuild(result: BuildAppResult): string[] {
  const lines = [`App: ${result.outDir}`];
  for (const f of [...result.files].sort((a, b) => a.name.localeCompare(b.name)))
    lines.push(`  ${f.name.padEnd(22)} ${megabytes(f.bytes)}`);
  lines.push(`  total                  ${megabytes(result.totalBytes)}`);
  const s = result.settings;
  lines.push(
    `Model ${s.imageSize}x${s.imageSize} (${s.fit}), ${s.weights} weights, threshold ${s.threshold.toFixed(4)} (${s.thresholdRule})`,
  );
  const q = result.quantization;
  if (q) {
    const diff = q.quantizedAccuracy - q.floatAccuracy;
    lines.push(
      `Quantization to ${q.bits} bits, on the run's ${q.images} test images: accuracy ${pct(q.floatAccuracy)} (float32; ` +
        `metrics.json says ${pct(q.recordedAccuracy)}) -> ${pct(q.quantizedAccuracy)} (${diff >= 0 ? '+' : ''}${(100 * diff).toFixed(2)} points), ` +
        `${q.decisionsChanged} decision(s) changed, largest probability change ${q.maxProbabilityDifference.toExponential(2)}`,
    );
  }
  lines.push(`Open file://${result.index} (or serve ${result.outDir} with any static server).`);
  return lines;
}

export async function main(argv: string[] = process.argv.slice(2), io: CliIo = defaultIo): Promise<number> {
  const program = cliProgram('npm run app --', io)
    .description('Build the static web app of a trained run: the model in the browser, with Grad-CAM.')
    .option('--run <dir>', 'run folder (default: the newest run)')
    .option('--out <dir>', "where to write the app (default: the run's app/ folder)")
    .option('--quantize <bits>', 'quantize the weights to 16 or 8 bits and measure what it costs on the test split', quantizeBits)
    .option('--runs <dir>', 'where to look for the newest run', DEFAULT_RUNS_DIR);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<{ run?: string; out?: string; quantize?: QuantizeBits; runs: string }>();
  try {
    const runDir = flags.run ?? findLatestRun(flags.runs);
    if (!runDir) throw new Error(`No trained run under ${flags.runs}; train one with 'npm start' or pass --run DIR.`);
    checkRunDir(path.resolve(runDir));
    await initBackend({ quiet: true });
    io.err(`Building the app of ${path.resolve(runDir)}${flags.quantize ? `, weights quantized to ${flags.quantize} bits` : ''}...`);
    const result = await buildApp({ runDir, outDir: flags.out, quantize: flags.quantize });
    for (const line of describeBuild(result)) io.out(line);
    return 0;
  } catch (err) {
    io.err(`app: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }
}

runAsScript(module, main);
