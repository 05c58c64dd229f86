/**
 * The steps notebooks 04 and 05 take, as calls: build the training configuration from the parameters cell, train
 * into a new run folder, pick a run to evaluate, evaluate it and write metrics.json. Cells stay short, the CLI and
 * the notebooks share one implementation, and re-running a cell is safe: the model a previous execution of the
 * same cell left behind is disposed before the next one is made, so tensors do not pile up in a long-lived kernel.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { parseAugment } from '../augment';
import { backendInfo, type BackendName } from '../accel';
import { loadSplit, saveSplit } from '../data/split';
import type { EvalResult } from '../evaluate';
import {
  DEFAULT_PIPELINE,
  decode,
  evaluateRun,
  newRunDir,
  parseThresholdRule,
  trainModel,
  writeEvaluation,
  writeRunConfig,
  type DecodedSplit,
  type PipelineConfig,
  type PipelineHooks,
} from '../pipeline';
import type { NotebookPaths } from './params';
import { RUN_FILES, isRunDir } from '../runs/layout';
import { acquireRunLock } from '../runs/lock';
import { formatThresholdRule } from '../runs/naming';
import { bestEpoch, listRuns, loadRunModel, readRun, type Run } from '../runs/read';
import type { MetricsFile } from '../runs/metrics-file';
import { type AveragingOutcome, parseSwaFrom } from '../train/swa';
import type { EpochLogs } from '../train/train';
import type { Split } from '../types';

/** What notebook 04's parameters cell declares. */
export interface TrainParams {
  imageSize: number;
  model: string;
  epochs: number;
  batchSize: number;
  learningRate: number;
  augment: string;
  patience: number;
  seed: number;
  /** Weight averaging's first epoch: 0 (off, the default: the best epoch alone), a whole epoch, or 'second-half'. */
  swaFrom?: number | string;
  /** Run folder label; '' names it by the hyperparameters that differ from the defaults. */
  name?: string;
}

/** The pipeline configuration a notebook trains with: the defaults, the parameters cell, the split's data root. */
export function notebookTrainConfig(params: TrainParams, split: Split, paths: NotebookPaths): PipelineConfig {
  if (params.model !== 'seed' && params.model !== 'small') {
    throw new Error(`Parameter model = ${JSON.stringify(params.model)} is not a model variant; use 'seed' or 'small'.`);
  }
  let swaFrom: number | 'second-half' | undefined;
  try {
    swaFrom = params.swaFrom === undefined ? undefined : parseSwaFrom(params.swaFrom);
  } catch (err) {
    throw new Error(`Parameter swaFrom: ${(err as Error).message}`);
  }
  if (!split.root) throw new Error(`${paths.splitFile} does not record its data root; re-run 02-split-and-augment to rewrite it.`);
  return {
    ...DEFAULT_PIPELINE,
    data: split.root,
    out: paths.runsDir,
    ...(params.name ? { name: params.name } : {}),
    imageSize: params.imageSize,
    variant: params.model,
    patience: params.patience,
    cacheDir: paths.cacheDir,
    split: { ...DEFAULT_PIPELINE.split, seed: split.seed },
    train: {
      ...DEFAULT_PIPELINE.train,
      epochs: params.epochs,
      batchSize: params.batchSize,
      learningRate: params.learningRate,
      augment: parseAugment(params.augment),
      seed: params.seed,
      ...(swaFrom === undefined ? {} : { swaFrom }),
    },
  };
}

/** Models handed out by the functions below, by cell role; replaced (and disposed) on the next execution. */
const owned = new Map<string, tf.LayersModel>();

function replaceOwned(role: string, model: tf.LayersModel | undefined): void {
  const previous = owned.get(role);
  if (previous && previous !== model) previous.dispose();
  if (model) owned.set(role, model);
  else owned.delete(role);
}

/** Disposes what the notebook helpers still hold (e.g. before restarting work in the same kernel). */
export function disposeNotebookModels(): void {
  for (const role of [...owned.keys()]) replaceOwned(role, undefined);
}

/**
 * The folder a notebook training writes: the `runDir` parameter when given (it must not hold a run yet: runs are
 * never overwritten), else a new `<time>-<label>` folder under `out/runs`.
 */
export function notebookRunDir(cfg: PipelineConfig, paths: NotebookPaths): string {
  if (!paths.runDir) return newRunDir(cfg);
  if (isRunDir(paths.runDir)) {
    throw new Error(
      `runDir ${paths.runDir} already holds a run, and runs are never overwritten; set runDir to '' (a new folder under ${paths.runsDir} each time) or to a new folder.`,
    );
  }
  fs.mkdirSync(paths.runDir, { recursive: true });
  return paths.runDir;
}

export interface NotebookTraining {
  runDir: string;
  config: PipelineConfig;
  /** The best model by val_loss; owned by this module until the cell runs again (do not dispose it yourself). */
  model: tf.LayersModel;
  history: EpochLogs[];
  bestEpoch: number | null;
  /** With weight averaging: the epochs averaged, and whether their mean replaced the best epoch as `model`. */
  averaging?: AveragingOutcome;
  stopReason?: string;
  seconds: number;
}

/** Notebook 04's training cell: a new run folder (split, config.json, lock), the standard callbacks, the best model. */
export async function trainInNotebook(
  split: Split,
  decoded: Pick<DecodedSplit, 'train' | 'val'>,
  cfg: PipelineConfig,
  paths: NotebookPaths,
  hooks: PipelineHooks = {},
): Promise<NotebookTraining> {
  const log = hooks.log ?? console.log;
  if (decoded.train.size !== cfg.imageSize) {
    throw new Error(
      `The images were decoded at ${decoded.train.size}x${decoded.train.size} but imageSize is ${cfg.imageSize}: re-run the data cell after changing imageSize.`,
    );
  }
  replaceOwned('train', undefined);
  const runDir = notebookRunDir(cfg, paths);
  const lock = acquireRunLock(runDir, 'notebook 04-train');
  try {
    log(`run folder: ${runDir}`);
    await saveSplit(split, path.join(runDir, RUN_FILES.split));
    const backend = backendInfo() ?? { name: tf.getBackend() as BackendName, threads: 1, skipped: [] };
    writeRunConfig(runDir, cfg, backend, split.root ?? cfg.data);
    const started = Date.now();
    const trained = await trainModel(decoded, cfg, runDir, { progress: { mode: 'notebook' }, log, ...hooks });
    replaceOwned('train', trained.model);
    const r = trained.result;
    return {
      runDir,
      config: cfg,
      model: trained.model,
      history: r.history,
      bestEpoch: trained.bestEpoch,
      averaging: trained.averaging,
      stopReason: r.stopReason,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    lock.release();
  }
}

/** One line for the notebook: epochs, time, stop reason, best epoch, where the model is. */
export function describeTraining(t: NotebookTraining): string {
  return (
    `${t.history.length} epoch(s) in ${t.seconds.toFixed(0)} s` +
    (t.stopReason ? ` (stopped: ${t.stopReason})` : '') +
    `; best epoch by validation loss: ${t.bestEpoch ?? 'none'}` +
    (t.averaging
      ? `; the mean of epochs ${t.averaging.epochs.join(', ')} ${t.averaging.kept ? 'is the model' : 'scored worse, not kept'}`
      : '') +
    `; model saved to ${path.join(t.runDir, RUN_FILES.model)}`
  );
}

/**
 * The run notebook 05 evaluates: the `runDir` parameter when given, else the newest run under `out/runs` that has
 * a trained model. Says which, and how many there were to choose from.
 */
export function pickRun(paths: NotebookPaths, log: (line: string) => void = console.log): Run {
  if (paths.runDir) {
    if (!isRunDir(paths.runDir))
      throw new Error(
        `runDir ${paths.runDir} is not a run folder (no config.json); run 04-train first, or set runDir to '' for the newest run.`,
      );
    const run = readRun(paths.runDir);
    log(`run: ${run.name} (the runDir parameter)`);
    return run;
  }
  const { runs, problems } = listRuns(paths.runsDir);
  for (const p of problems) log(`  skipped ${p.dir}: ${p.message}`);
  const trained = runs.filter((r) => r.status === 'trained' || r.status === 'evaluated');
  if (!trained.length) throw new Error(`${paths.runsDir} holds no trained run yet: run 04-train first (with the same out).`);
  const run = trained[trained.length - 1];
  log(`run: ${run.name} (the newest of ${trained.length} trained run(s) under ${paths.runsDir}; set runDir to pick another)`);
  return run;
}

export interface NotebookEvaluation {
  run: Run;
  config: PipelineConfig;
  model: tf.LayersModel;
  decoded: DecodedSplit;
  result: EvalResult;
  metrics: MetricsFile;
}

/** Notebook 05's evaluation: the run's model on val (threshold) and test, written as the run's metrics.json. */
export async function evaluateInNotebook(run: Run, paths: NotebookPaths, threshold: string): Promise<NotebookEvaluation> {
  replaceOwned('evaluate', undefined);
  const cfg = run.config;
  const split = await loadSplit(path.join(run.dir, RUN_FILES.split));
  const decoded = await decode(split, { imageSize: cfg.imageSize, fit: cfg.fit, cacheDir: paths.cacheDir });
  const model = await loadRunModel(run.dir);
  replaceOwned('evaluate', model);
  const rule = parseThresholdRule(threshold);
  const result = await evaluateRun(model, decoded, rule, { thresholdOn: cfg.thresholdOn, tta: cfg.tta });
  const lock = acquireRunLock(run.dir, 'notebook 05-evaluate');
  try {
    const metrics = writeEvaluation(run.dir, result, {
      bestEpoch: bestEpoch(run.history)?.epoch ?? null,
      averagedEpochs: run.averaging?.kept ? run.averaging.epochs : undefined,
      epochsRun: run.history.length,
      imageSize: cfg.imageSize,
      writtenBy: '05-evaluate',
    });
    console.log(
      `model: ${cfg.variant} at ${cfg.imageSize}x${cfg.imageSize}` +
        (metrics.averagedEpochs ? `, the mean of the weights of epochs ${metrics.averagedEpochs.join(', ')}` : '') +
        `; threshold ${result.threshold.toFixed(4)} (${formatThresholdRule(rule)}, chosen on ${cfg.thresholdOn ?? 'val'})`,
    );
    console.log(`test: ${result.test.count} images; metrics and predictions saved in ${run.dir}`);
    return { run: readRun(run.dir), config: cfg, model, decoded, result, metrics };
  } finally {
    lock.release();
  }
}
