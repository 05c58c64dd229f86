/**
 * `npm run evaluate -- RUN [RUN...] [--tta N] [--threshold RULE] [--threshold-on SPLIT] [--stress] [--calibrate] [--json FILE]`
 *
 * Scores trained runs again without touching them: another threshold rule or split, test-time augmentation, an
 * ensemble (several runs that share one split: their probabilities are averaged), the exposure stress test, and
 * temperature scaling fitted on the threshold's validation split.
 * The run folders are read only; `--json` writes the numbers where you say.
 */
import * as fs from 'fs';
import * as path from 'path';
import { formatAuc, formatPercent } from '../format';
import { type Command, Option } from 'commander';
import { type CliIo, defaultIo, parseCommand, wholeNumber, cliProgram, runAsScript } from './common';
import { initBackend, describeBackend } from '../accel';
import { loadSplit } from '../data/split';
import {
  evaluate,
  evaluateProbabilities,
  predictMean,
  THRESHOLD_SPLITS,
  thresholdSource,
  type EvalResult,
  type ThresholdSplit,
} from '../evaluate';
import type { ThresholdRule } from '../evaluate/metrics';
import { decode, parseThresholdRule } from '../pipeline';
import { DEFAULT_RUNS_DIR, RUN_FILES } from '../runs/layout';
import { formatThresholdRule } from '../runs/naming';
import { loadRunModel, readRunConfig, resolveRun } from '../runs/read';
import { EXPOSURE_SHIFTS, shiftExposure } from '../evaluate/stress';
import { type CalibrationScores, calibrationScores, fitTemperature, scaleProbabilities } from '../evaluate/calibration';
import type { DecodedImages } from '../types';

interface Flags {
  tta?: number;
  threshold?: ThresholdRule;
  thresholdOn?: ThresholdSplit;
  stress?: boolean;
  calibrate?: boolean;
  json?: string;
  runs?: string;
}

export interface StressRow {
  shift: string;
  part: 'valTime' | 'val';
  specificity: number;
  recall: number;
  auc: number;
}

export interface EvaluateReport {
  runs: string[];
  threshold: number;
  thresholdRule: string;
  thresholdOn: ThresholdSplit;
  tta: number;
  parts: Record<
    string,
    { count: number; accuracy: number; precision: number; recall: number; specificity: number; f1: number; auc: number }
  >;
  stress?: StressRow[];
  calibration?: Calibration;
}

export interface Calibration {
  temperature: number;
  fittedOn: ThresholdSplit;
  parts: Record<string, { before: CalibrationScores; after: CalibrationScores }>;
}

function buildProgram(io: CliIo): Command {
  return cliProgram('npm run evaluate --', io)
    .description('Score trained runs again (threshold rule, test-time augmentation, ensembles, exposure stress); runs are only read.')
    .argument('<runs...>', 'run folders or names (several: an ensemble; they must share one split)')
    .option('--tta <views>', 'test-time augmentation views (default: the run config, else 1)', wholeNumber(1))
    .option('--threshold <rule>', "threshold rule: 'youden', 'recall=0.97' or 'fixed=0.5' (default: the run's)", parseThresholdRule)
    .addOption(
      new Option('--threshold-on <split>', "validation split the rule is applied to (default: the run's)").choices([...THRESHOLD_SPLITS]),
    )
    .option('--stress', 'also score the validation splits under fixed exposure shifts (src/stress.ts)')
    .option('--calibrate', 'fit a temperature on the threshold split and report log loss, Brier score and ECE before and after')
    .option('--json <file>', 'write the numbers as JSON')
    .option('--runs <dir>', `where run names are looked up (default ${DEFAULT_RUNS_DIR})`);
}

function summarize(ev: EvalResult): EvaluateReport['parts'] {
  const out: EvaluateReport['parts'] = {};
  for (const [name, m] of [
    ['val', ev.val],
    ['valTime', ev.valTime],
    ['test', ev.test],
  ] as const) {
    if (!m) continue;
    out[name] = {
      count: m.count,
      accuracy: m.accuracy,
      precision: m.precision,
      recall: m.recall,
      specificity: m.specificity,
      f1: m.f1,
      auc: m.auc,
    };
  }
  return out;
}

/** Temperature scaling fitted on the films the threshold was chosen on (thresholdSource's rule), scored on every part. */
function calibrate(ev: EvalResult, fittedOn: ThresholdSplit): Calibration {
  const part = (name: string) => {
    const rows = ev.predictions.filter((p) => p.split === name);
    return {
      labels: Uint8Array.from(rows, (p) => (p.label === 'PNEUMONIA' ? 1 : 0)),
      probs: Float32Array.from(rows, (p) => p.probability),
    };
  };
  const parts = { val: part('val'), valTime: part('valTime'), test: part('test') };
  const valTime = parts.valTime.labels.length ? parts.valTime : undefined;
  const fit = thresholdSource(fittedOn, { val: parts.val, valTime }, parts.val.probs, valTime?.probs);
  const temperature = fitTemperature(fit.labels, fit.probs);
  const scores: Calibration['parts'] = {};
  for (const [name, { labels, probs }] of Object.entries(parts)) {
    if (!labels.length) continue;
    scores[name] = { before: calibrationScores(labels, probs), after: calibrationScores(labels, scaleProbabilities(probs, temperature)) };
  }
  return { temperature, fittedOn, parts: scores };
}

/** Every run must have been split the same way, or averaging their test probabilities mixes different films. */
function sameSplit(runDirs: string[]): void {
  const read = (dir: string) => fs.readFileSync(path.join(dir, RUN_FILES.split), 'utf8');
  const first = read(runDirs[0]);
  for (const dir of runDirs.slice(1)) {
    if (read(dir) !== first) {
      throw new Error(
        `${dir} was split differently from ${runDirs[0]}; an ensemble needs runs with one split (train them with the same --split-seed).`,
      );
    }
  }
}

export async function main(argv: string[] = process.argv.slice(2), io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<Flags>();
  try {
    const runDirs = program.args.map((ref) =>
      fs.existsSync(path.join(ref, RUN_FILES.config)) ? path.resolve(ref) : resolveRun(ref, flags.runs),
    );
    sameSplit(runDirs);
    const configs = runDirs.map(readRunConfig);
    const cfg = configs[0];
    if (configs.some((c) => c.imageSize !== cfg.imageSize)) throw new Error('the runs use different input sizes; an ensemble needs one.');
    const backend = await initBackend({ prefer: cfg.backend, quiet: true });
    io.out(describeBackend(backend));
    const split = await loadSplit(path.join(runDirs[0], RUN_FILES.split));
    const decoded = await decode(split, { imageSize: cfg.imageSize, fit: cfg.fit, log: io.out });
    const models = await Promise.all(runDirs.map(loadRunModel));
    const rule = flags.threshold ?? cfg.threshold;
    const thresholdOn = flags.thresholdOn ?? cfg.thresholdOn ?? 'val';
    const tta = flags.tta ?? cfg.tta ?? 1;
    const ev = await evaluate(models, decoded, { rule, thresholdOn, tta });
    const report: EvaluateReport = {
      runs: runDirs,
      threshold: ev.threshold,
      thresholdRule: formatThresholdRule(rule),
      thresholdOn,
      tta,
      parts: summarize(ev),
    };
    io.out(
      `${runDirs.length > 1 ? `Ensemble of ${runDirs.length} runs` : path.basename(runDirs[0])}: threshold ${ev.threshold.toFixed(3)} ` +
        `(${report.thresholdRule} on ${thresholdOn}), ${tta} view(s)`,
    );
    io.out('part      n     acc%   prec%  recall%  spec%   AUC');
    for (const [name, m] of Object.entries(report.parts)) {
      io.out(
        `${name.padEnd(8)} ${String(m.count).padStart(4)}  ${formatPercent(m.accuracy).padStart(6)} ${formatPercent(m.precision).padStart(6)} ${formatPercent(m.recall).padStart(7)} ${formatPercent(m.specificity).padStart(6)}  ${formatAuc(m.auc)}`,
      );
    }
    if (flags.stress) {
      report.stress = [];
      io.out('exposure stress (same threshold):');
      for (const shift of EXPOSURE_SHIFTS) {
        for (const part of ['valTime', 'val'] as const) {
          const images: DecodedImages | undefined = decoded[part];
          if (!images?.records.length) continue;
          const probs = await predictMean(models, shiftExposure(images, shift), 64, tta);
          const m = evaluateProbabilities(images.labels, probs, ev.threshold);
          report.stress.push({ shift: shift.name, part, specificity: m.specificity, recall: m.recall, auc: m.auc });
          io.out(
            `  ${shift.name.padEnd(14)} ${part.padEnd(8)} spec ${formatPercent(m.specificity).padStart(5)}%  recall ${formatPercent(m.recall).padStart(5)}%  AUC ${formatAuc(m.auc)}`,
          );
        }
      }
    }
    if (flags.calibrate) {
      report.calibration = calibrate(ev, thresholdOn);
      io.out(
        `temperature scaling: T = ${report.calibration.temperature.toFixed(3)} (fitted on ${thresholdOn}; thresholded metrics and AUC unchanged)`,
      );
      io.out('part      log loss         Brier            ECE');
      for (const [name, { before, after }] of Object.entries(report.calibration.parts)) {
        const cell = (k: keyof CalibrationScores) => `${before[k].toFixed(3)} -> ${after[k].toFixed(3)}`;
        io.out(`${name.padEnd(8)}  ${cell('logLoss').padEnd(15)}  ${cell('brier').padEnd(15)}  ${cell('ece')}`);
      }
    }
    if (flags.json) {
      fs.mkdirSync(path.dirname(path.resolve(flags.json)), { recursive: true });
      fs.writeFileSync(flags.json, JSON.stringify(report, null, 2) + '\n');
      io.out(`Wrote ${flags.json}`);
    }
    models.forEach((m) => m.dispose());
    return 0;
  } catch (err) {
    io.err(`evaluate: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }
}

runAsScript(module, main);
