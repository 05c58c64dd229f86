/**
 * `npm start -- [flags]`: one full training run (discover, split, decode, train, evaluate) into a new run folder
 * under outputs/runs/, or `--resume RUN_DIR` to continue an interrupted one.
 */
import * as fs from 'fs';
import * as path from 'path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { type CliIo, defaultIo, parseCommand, wholeNumber, cliProgram, runAsScript } from './common';
import { parseAugment } from '../augment';
import { BACKEND_ORDER, type BackendName } from '../accel';
import { generateDemoDataset } from '../data/demo';
import { DEFAULT_PIPELINE, type MonitoredLoss, type PipelineConfig, parseThresholdRule, readRunConfig, runPipeline } from '../pipeline';
import { checkTta, THRESHOLD_SPLITS, type ThresholdSplit } from '../evaluate';
import { INPUT_NORMALIZATIONS, type InputNormalization } from '../model/normalization';
import { parseSwaFrom } from '../train/swa';
import { compareRuns, formatComparison } from '../runs/compare';
import { readRun } from '../runs/read';
import { createSweep, isSweepDir, parseSweepAxis, runSweep, sweepGrid, type SweepAxis, type SweepPoint } from '../runs/sweep';

export type { CliIo };

export const REAL_DATA_DIR = path.join('data', 'chest_xray');
export const DEMO_DATA_DIR = path.join('data', 'demo');

function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number > 0.');
  return n;
}

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number >= 0.');
  return n;
}

function fraction(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n >= 0 && n < 1)) throw new InvalidArgumentError('expected a number in [0, 1).');
  return n;
}

/** Wraps a parser so its Error becomes commander's one-line "invalid argument" message. */
function asArgument<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

interface Flags {
  data?: string;
  epochs?: number;
  batchSize?: number;
  imageSize?: number;
  lr?: number;
  augment?: PipelineConfig['train']['augment'];
  classWeights?: 'balanced' | 'none';
  balance?: 'none' | 'oversample';
  variant?: PipelineConfig['variant'];
  model?: PipelineConfig['variant'];
  seed?: number;
  valFraction?: number;
  valTime?: number;
  out?: string;
  name?: string;
  threshold?: PipelineConfig['threshold'];
  limit?: number;
  backend?: BackendName;
  resume?: string;
  patience?: number;
  sweep?: string[];
  normalize?: InputNormalization;
  labelSmoothing?: number;
  mixup?: number;
  swaFrom?: number | 'second-half';
  tta?: number;
  monitor?: MonitoredLoss;
  thresholdOn?: ThresholdSplit;
  splitSeed?: number;
}

/** Flags a sweep may vary; the rest (data, out, limit, ...) are one per sweep. */
export const SWEEPABLE = [
  'epochs',
  'batch-size',
  'image-size',
  'lr',
  'augment',
  'class-weights',
  'balance',
  'variant',
  'model',
  'seed',
  'val-fraction',
  'patience',
  'threshold',
  'normalize',
  'label-smoothing',
  'mixup',
  'swa-from',
  'tta',
  'monitor',
  'threshold-on',
  'split-seed',
] as const;

export function buildProgram(io: CliIo): Command {
  const d = DEFAULT_PIPELINE;
  return cliProgram('npm start --', io)
    .description('Train and evaluate the pneumonia CNN; writes a run folder under outputs/runs/.')
    .option(
      '--data <dir>',
      `dataset root (default: $PNEUMO_DATA, else ${REAL_DATA_DIR} if present, else the synthetic demo set in ${DEMO_DATA_DIR})`,
    )
    .option('--epochs <n>', `epochs (default ${d.train.epochs})`, wholeNumber(1))
    .option('--batch-size <n>', `batch size (default ${d.train.batchSize})`, wholeNumber(1))
    .option('--image-size <px>', `input side in pixels, >= 32 (default ${d.imageSize})`, wholeNumber(32))
    .option('--lr <rate>', `Adam learning rate (default ${d.train.learningRate})`, positiveNumber)
    .option(
      '--augment <spec>',
      "augmentation: 'default' (zoom=0.15,rotation=10,width-shift=0.1,height-shift=0.1,brightness=0.1,contrast=0.1), 'seed' (the article's zoom=0.3,vflip), 'none', or a spec like 'zoom=0.2,hflip'",
      asArgument(parseAugment),
    )
    .addOption(new Option('--class-weights <mode>', `loss class weights (default ${d.train.classWeights})`).choices(['balanced', 'none']))
    .addOption(new Option('--balance <mode>', 'oversample the minority class in each epoch (default none)').choices(['none', 'oversample']))
    .addOption(new Option('--variant <name>', `model variant (default ${d.variant})`).choices(['seed', 'small']))
    .addOption(new Option('--model <name>', 'the same as --variant (the notebooks call it model)').choices(['seed', 'small']))
    .option('--seed <k>', `seed for split, shuffling, augmentation, dropout and init (default ${d.train.seed})`, wholeNumber(0))
    .option('--split-seed <k>', 'seed for the split alone (default: --seed), so runs of several seeds share one split', wholeNumber(0))
    .addOption(
      new Option('--normalize <mode>', `per-image intensity normalization, the model's first layer (default ${d.normalize})`).choices([
        ...INPUT_NORMALIZATIONS,
      ]),
    )
    .option('--label-smoothing <eps>', 'label smoothing: targets eps/2 and 1-eps/2 (default 0)', fraction)
    .option('--mixup <alpha>', 'mixup with Beta(alpha, alpha) blends of each batch, 0 = off (default 0)', nonNegativeNumber)
    .option(
      '--swa-from <epoch>',
      `stochastic weight averaging: keep the mean of the weights of every epoch from this one on; second-half = from epoch epochs/2 + 1, 0 = off (default ${d.train.swaFrom})`,
      asArgument(parseSwaFrom),
    )
    .option('--tta <views>', `test-time augmentation: average over this many fixed views, 1 = off (default ${d.tta})`, wholeNumber(1))
    .addOption(
      new Option('--monitor <loss>', `the loss that picks the best epoch, stops early and lowers the rate (default ${d.monitor})`).choices([
        'val_loss',
        'val_time_loss',
      ]),
    )
    .addOption(
      new Option('--threshold-on <split>', `the validation split the threshold rule is applied to (default ${d.thresholdOn})`).choices([
        ...THRESHOLD_SPLITS,
      ]),
    )
    .option('--val-fraction <f>', `share of train patients held out for validation (default ${d.split.valFraction})`, fraction)
    .option(
      '--val-time <f>',
      `share of each acquisition series held out, earliest patients first, as the out-of-time validation split; 0 = none (default ${d.split.valTimeFraction})`,
      fraction,
    )
    .option('--patience <n>', `early-stopping patience in epochs, 0 = off (default ${d.patience})`, wholeNumber(0))
    .option('--out <dir>', `parent folder for run folders (default ${d.out})`)
    .option('--name <name>', 'run name (folder suffix)')
    .option(
      '--threshold <rule>',
      "threshold rule, chosen on validation: 'youden', 'recall=0.97' or 'fixed=0.5' (default recall=0.98)",
      asArgument(parseThresholdRule),
    )
    .option('--limit <n>', 'use at most N images per folder and class (quick runs)', wholeNumber(1))
    .addOption(new Option('--backend <name>', 'tfjs backend (default: best available)').choices([...BACKEND_ORDER]))
    .option(
      '--resume <dir>',
      'continue an interrupted run from its last completed epoch, or a killed sweep with the runs it has not finished',
    )
    .option(
      '--sweep <flag=values>',
      `train a grid, one run after another (repeat for more axes), e.g. --sweep lr=1e-3,3e-4 --sweep augment=default,seed; flags: ${SWEEPABLE.join(', ')}`,
      (v: string, all: string[] = []) => [...all, v],
    );
}

/** Chooses the dataset: the flag, then $PNEUMO_DATA, then data/chest_xray, then the demo set (made if missing). */
export async function resolveDataDir(flag: string | undefined, io: CliIo, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (flag) return flag;
  if (env.PNEUMO_DATA) return env.PNEUMO_DATA;
  if (fs.existsSync(REAL_DATA_DIR)) return REAL_DATA_DIR;
  if (!fs.existsSync(path.join(DEMO_DATA_DIR, 'train'))) {
    io.out(`No dataset given and ${REAL_DATA_DIR} not found: generating the synthetic demo dataset in ${DEMO_DATA_DIR} ...`);
    await generateDemoDataset({ outDir: DEMO_DATA_DIR });
  }
  io.out(
    `Using the synthetic demo dataset in ${DEMO_DATA_DIR}: synthetic drawings, not radiographs. Get the real data with 'npm run data:get'.`,
  );
  return DEMO_DATA_DIR;
}

/** Flags given on the command line override the defaults, or the resumed run's saved settings. */
export function applyFlags(base: PipelineConfig, flags: Flags, given: (key: keyof Flags) => boolean): PipelineConfig {
  const cfg: PipelineConfig = { ...base, train: { ...base.train }, split: { ...base.split } };
  const set = <K extends keyof Flags>(key: K, apply: (v: NonNullable<Flags[K]>) => void) => {
    if (given(key) && flags[key] !== undefined) apply(flags[key] as NonNullable<Flags[K]>);
  };
  set('data', (v) => (cfg.data = v));
  set('epochs', (v) => (cfg.train.epochs = v));
  set('batchSize', (v) => (cfg.train.batchSize = v));
  set('imageSize', (v) => (cfg.imageSize = v));
  set('lr', (v) => (cfg.train.learningRate = v));
  set('augment', (v) => (cfg.train.augment = v));
  set('classWeights', (v) => (cfg.train.classWeights = v));
  set('balance', (v) => (cfg.train.balance = v));
  set('variant', (v) => (cfg.variant = v));
  set('model', (v) => (cfg.variant = v));
  set('seed', (v) => {
    cfg.train.seed = v;
    cfg.split.seed = v;
  });
  set('splitSeed', (v) => (cfg.split.seed = v));
  set('normalize', (v) => (cfg.normalize = v));
  set('labelSmoothing', (v) => (cfg.train.labelSmoothing = v));
  set('mixup', (v) => (cfg.train.mixup = v));
  set('swaFrom', (v) => (cfg.train.swaFrom = v));
  set('tta', (v) => {
    checkTta(v);
    cfg.tta = v;
  });
  set('monitor', (v) => (cfg.monitor = v));
  set('thresholdOn', (v) => (cfg.thresholdOn = v));
  set('valFraction', (v) => (cfg.split.valFraction = v));
  set('valTime', (v) => (cfg.split.valTimeFraction = v));
  set('patience', (v) => (cfg.patience = v));
  set('out', (v) => (cfg.out = v));
  set('name', (v) => (cfg.name = v));
  set('threshold', (v) => (cfg.threshold = v));
  set('limit', (v) => (cfg.limit = v));
  set('backend', (v) => (cfg.backend = v));
  return cfg;
}

/** One sweep point's settings: its flags parsed and checked exactly as on the command line, applied to the base. */
export function sweepPointConfig(base: PipelineConfig, point: Pick<SweepPoint, 'key' | 'argv'>): PipelineConfig {
  const messages: string[] = [];
  const program = buildProgram({ out: () => undefined, err: (l) => messages.push(l) });
  if (parseCommand(program, point.argv) !== undefined) {
    throw new Error(`--sweep ${point.key}: ${messages.join(' ').replace(/^error: /, '') || 'not understood'}`);
  }
  const flags = program.opts<Flags>();
  return applyFlags(base, flags, (key) => program.getOptionValueSource(key) === 'cli');
}

function checkAxes(axes: SweepAxis[]): void {
  for (const a of axes) {
    if (!(SWEEPABLE as readonly string[]).includes(a.flag)) {
      throw new Error(`--sweep ${a.flag}=...: '${a.flag}' cannot be swept; sweepable flags: ${SWEEPABLE.join(', ')}.`);
    }
  }
}

/** Runs (or continues) a sweep, Ctrl-C stopping it cleanly, and prints the comparison of its runs at the end. */
async function sweepCommand(dir: string, io: CliIo, handleSigint: boolean): Promise<number> {
  const controller = new AbortController();
  let sigints = 0;
  const onSigint = () => {
    if (++sigints > 1) process.exit(130);
    io.out("\nCtrl-C: stopping the sweep after saving the current run's completed epochs. Press Ctrl-C again to quit at once.");
    controller.abort();
  };
  if (handleSigint) process.on('SIGINT', onSigint);
  try {
    const outcome = await runSweep(dir, { configFor: sweepPointConfig, run: runPipeline }, { log: io.out, signal: controller.signal });
    const runs = outcome.manifest.points.filter((p) => p.runDir && p.status !== 'pending').map((p) => readRun(p.runDir!));
    io.out('');
    io.out(`Sweep ${dir}: ${outcome.runDirs.length} of ${outcome.manifest.points.length} run(s) done`);
    if (runs.length) io.out(formatComparison(compareRuns(runs, DEFAULT_PIPELINE)));
    return outcome.interrupted ? 130 : 0;
  } finally {
    if (handleSigint) process.removeListener('SIGINT', onSigint);
  }
}

/** Settings a resumed run must keep, or its checkpoint and split no longer fit. */
const FIXED_ON_RESUME: Array<keyof Flags> = [
  'data',
  'imageSize',
  'variant',
  'model',
  'seed',
  'splitSeed',
  'valFraction',
  'valTime',
  'limit',
  'normalize',
];

/** Runs the command; returns the exit code (0 ok, 1 failed, 2 bad usage, 130 interrupted). */
export async function main(
  argv: string[] = process.argv.slice(2),
  io: CliIo = defaultIo,
  opts: { handleSigint?: boolean } = {},
): Promise<number> {
  const program = buildProgram(io);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<Flags>();
  const given = (key: keyof Flags) => program.getOptionValueSource(key) === 'cli';
  try {
    if (flags.resume && isSweepDir(flags.resume)) {
      const extra = (Object.keys(flags) as Array<keyof Flags>).filter((k) => k !== 'resume' && given(k));
      if (extra.length) {
        io.err(
          `start: --resume of a sweep continues it with its own settings; drop ${extra.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}.`,
        );
        return 2;
      }
      return await sweepCommand(flags.resume, io, opts.handleSigint ?? true);
    }
    if (flags.sweep?.length) {
      if (flags.resume) {
        io.err('start: --sweep starts a new sweep; to continue one, pass only --resume SWEEP_DIR.');
        return 2;
      }
      const axes = flags.sweep.map(parseSweepAxis);
      checkAxes(axes);
      const sweptFlags = new Set(axes.map((a) => a.flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())));
      const base = applyFlags(
        { ...DEFAULT_PIPELINE, data: await resolveDataDir(flags.data, io) },
        flags,
        (k) => k !== 'data' && !sweptFlags.has(k) && given(k),
      );
      // Every point is checked before anything trains: a typo in the last value must not surface hours later.
      for (const point of sweepGrid(axes)) sweepPointConfig(base, point);
      const dir = createSweep(base, axes);
      return await sweepCommand(dir, io, opts.handleSigint ?? true);
    }
    let cfg: PipelineConfig;
    if (flags.resume) {
      const changed = FIXED_ON_RESUME.filter(given);
      if (changed.length) {
        io.err(
          `start: --resume keeps the run's ${changed.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}; drop those flags or start a new run.`,
        );
        return 2;
      }
      cfg = applyFlags(readRunConfig(flags.resume), flags, given);
      cfg.resume = flags.resume;
    } else {
      cfg = applyFlags({ ...DEFAULT_PIPELINE, data: await resolveDataDir(flags.data, io) }, flags, (k) => k !== 'data' && given(k));
    }
    const result = await runPipeline(cfg, { log: io.out, handleSigint: opts.handleSigint ?? true });
    result.model?.dispose();
    return result.interrupted ? 130 : 0;
  } catch (err) {
    io.err(`start: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }
}

runAsScript(module, main);
