/**
 * The steps of a run, each its own function so a notebook can run them one per cell: load the data, split it by
 * patient (plus the out-of-time split), decode, train with the standard callbacks, evaluate.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { Dataset, Split, SplitName } from '../types';
import { LABELS } from '../types';
import { countsByFolderAndClass, describeDataset, discoverDataset } from '../data/discover';
import { assertNoPatientLeak, saveSplit, splitDataset, splitSummary } from '../data/split';
import { decodeSplit, type DecodedParts, type ResizeFit } from '../data/decode';
import { buildModel } from '../model';
import { evaluate, predictProbabilities, type EvalResult, type ThresholdSplit } from '../evaluate';
import { logLoss } from '../evaluate/calibration';
import type { ThresholdRule } from '../evaluate/metrics';
import { makeRng, shuffled } from '../random';
import { train, type EpochLogs, type TrainResult } from '../train/train';
import {
  type Callback,
  earlyStopping,
  historyWriter,
  loadLatestCheckpoint,
  modelCheckpoint,
  reduceLROnPlateau,
  writeHistory,
} from '../train/callbacks';
import { progress } from '../train/progress';
import { type AveragingOutcome, recomputeBatchNormStats, swaStartEpoch, weightAveraging } from '../train/swa';
import { RUN_FILES } from '../runs/layout';
import { loadModel, saveModel } from '../runs/model-files';
import { writeJsonAtomic } from '../files';
import type { MonitoredLoss, PipelineConfig, PipelineHooks } from './config';

/** Up to `limit` images per (source folder, class), chosen with the seed so quick runs are reproducible. */
export function limitDataset(ds: Dataset, limit: number, seed: number): Dataset {
  if (!(Number.isInteger(limit) && limit >= 1)) throw new Error(`limit must be a whole number >= 1 (got ${limit}).`);
  const rng = makeRng(seed);
  const keep = new Set<string>();
  const groups = new Map<string, Dataset['images']>();
  for (const img of ds.images) {
    const key = `${img.source}/${img.label}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(img);
  }
  for (const key of [...groups.keys()].sort()) {
    const sorted = [...groups.get(key)!].sort((a, b) => a.path.localeCompare(b.path));
    for (const img of shuffled(sorted, rng).slice(0, limit)) keep.add(img.path);
  }
  return { ...ds, images: ds.images.filter((img) => keep.has(img.path)) };
}

/** Step 1: discover the dataset (and optionally cut it down for a quick run). */
export async function loadData(
  dataDir: string,
  opts: { limit?: number; seed?: number; log?: (line: string) => void } = {},
): Promise<Dataset> {
  const log = opts.log ?? console.log;
  let ds = await discoverDataset(dataDir);
  describeDataset(ds).forEach((line) => log(line));
  if (opts.limit) {
    ds = limitDataset(ds, opts.limit, opts.seed ?? 42);
    log(`  --limit ${opts.limit}: using ${ds.images.length} images (${countsByFolderAndClass(ds.images)})`);
  }
  return ds;
}

/** Step 2: the patient-grouped split; saved to `<runDir>/split.json` when a run directory is given. */
export async function makeSplit(
  ds: Dataset,
  opts: PipelineConfig['split'] & { runDir?: string; log?: (line: string) => void },
): Promise<Split> {
  const log = opts.log ?? console.log;
  const split = splitDataset(ds, {
    seed: opts.seed,
    valFraction: opts.valFraction,
    testFraction: opts.testFraction,
    valTimeFraction: opts.valTimeFraction,
  });
  const { reusedOfficialIds } = assertNoPatientLeak(split);
  if (reusedOfficialIds)
    log(`  note: ${reusedOfficialIds} patient id(s) of the official test/ also occur in train/val; test/ is kept as published.`);
  const rows = splitSummary(split);
  for (const name of ['train', 'val', 'test'] as SplitName[]) {
    const part = rows.filter((r) => r.split === name);
    log(`Split ${name}: ${part.map((r) => `${r.label} ${r.images} (${r.patients} patients)`).join(', ')}`);
  }
  if (split.valTime?.length) {
    const counts = LABELS.map((l) => {
      const part = split.valTime!.filter((r) => r.label === l);
      return `${l} ${part.length} (${new Set(part.map((r) => r.patient)).size} patients)`;
    });
    log(`Split valTime (out of time: each series' earliest-numbered patients): ${counts.join(', ')}`);
  }
  log(`  test set: ${split.testSource === 'official' ? "the dataset's own test/ folder" : 'carved from train by patient'}`);
  if (opts.runDir) await saveSplit(split, path.join(opts.runDir, RUN_FILES.split));
  return split;
}

export type DecodedSplit = DecodedParts;

/** Step 3: decode all three parts to grayscale squares (cached on disk). */
export async function decode(
  split: Split,
  opts: { imageSize: number; fit?: ResizeFit; cacheDir?: string | null; progress?: boolean; log?: (line: string) => void },
): Promise<DecodedSplit> {
  const log = opts.log ?? console.log;
  const started = Date.now();
  const decoded = await decodeSplit(split, {
    size: opts.imageSize,
    fit: opts.fit,
    ...(opts.cacheDir !== undefined ? { cacheDir: opts.cacheDir } : {}),
    progress: opts.progress ?? false,
  });
  const skipped = (['train', 'val', 'test'] as SplitName[]).flatMap((n) => decoded[n].skipped);
  log(
    `Decoded ${decoded.train.labels.length + decoded.val.labels.length + decoded.test.labels.length} images at ` +
      `${opts.imageSize}x${opts.imageSize} in ${((Date.now() - started) / 1000).toFixed(1)} s` +
      (skipped.length
        ? `; skipped ${skipped.length} undecodable: ${skipped
            .slice(0, 3)
            .map((s) => `${path.basename(s.path)} (${s.reason})`)
            .join(', ')}`
        : ''),
  );
  return decoded;
}

export interface TrainedModel {
  /** The best model by the monitored loss (its weights restored from the checkpoint), or the weight average. */
  model: tf.LayersModel;
  result: TrainResult;
  bestEpoch: number | null;
  /** With weight averaging (`train.swaFrom`): which epochs were averaged and whether the mean is the model. */
  averaging?: AveragingOutcome;
}

/** Step 4: build (or resume) the model and train it with the standard callbacks; returns the best model. */
export async function trainModel(
  decoded: Pick<DecodedSplit, 'train' | 'val' | 'valTime'>,
  cfg: PipelineConfig,
  runDir: string,
  hooks: PipelineHooks = {},
): Promise<TrainedModel> {
  const log = hooks.log ?? console.log;
  const monitor = cfg.monitor ?? 'val_loss';
  if (monitor === 'val_time_loss' && !decoded.valTime?.labels.length) {
    throw new Error('--monitor val_time_loss needs an out-of-time validation split; set --val-time above 0.');
  }
  const checkpoint = modelCheckpoint({ dir: runDir, monitor });
  const swaFrom = swaStartEpoch(cfg.train);
  const averaging = swaFrom > 0 ? weightAveraging({ dir: path.join(runDir, RUN_FILES.swa), from: swaFrom }) : undefined;
  const callbacks: Callback[] = [
    historyWriter({ dir: runDir }),
    // Before the checkpoint: the resumable checkpoint then records the epochs this epoch's mean holds.
    ...(averaging ? [averaging] : []),
    ...(cfg.patience > 0 ? [earlyStopping({ monitor, patience: cfg.patience })] : []),
    reduceLROnPlateau({ monitor, ...cfg.reduceLR, log }),
    checkpoint,
    ...(hooks.progress === false ? [] : [progress(hooks.progress ?? {})]),
    ...(hooks.callbacks ?? []),
  ];

  if (cfg.train.balance === 'oversample' && cfg.train.classWeights === 'balanced') {
    log(
      'Note: oversampling already balances the classes; balanced class weights on top correct the imbalance twice (use --class-weights none).',
    );
  }
  let model: tf.LayersModel;
  let result: TrainResult;
  if (cfg.resume) {
    restoreBestEpoch(runDir, log);
    const ckpt = await loadLatestCheckpoint(runDir);
    model = ckpt.model;
    const done = ckpt.state.epoch;
    if (done >= cfg.train.epochs) {
      log(`Resume: all ${done} epoch(s) already completed (pass a larger --epochs to train further).`);
    } else {
      log(`Resume: continuing ${runDir} after epoch ${done} of ${cfg.train.epochs}`);
    }
    try {
      result = await train(model, decoded, cfg.train, callbacks, {
        initialEpoch: done,
        history: ckpt.state.history,
        optimizerState: ckpt.optimizerState,
        learningRate: ckpt.state.learningRate,
        callbackStates: ckpt.state.callbackStates,
        signal: hooks.signal,
        handleSigint: hooks.handleSigint,
      });
    } finally {
      tf.dispose(ckpt.optimizerState.map((t) => t.tensor));
    }
  } else {
    model = buildModel({ variant: cfg.variant, imageSize: cfg.imageSize, seed: cfg.train.seed, normalize: cfg.normalize });
    result = await train(model, decoded, cfg.train, callbacks, { signal: hooks.signal, handleSigint: hooks.handleSigint });
  }
  result.optimizer.dispose();
  writeHistory(runDir, result.history);

  const bestDir = path.join(runDir, RUN_FILES.model);
  let averagingOutcome: AveragingOutcome | undefined;
  if (averaging) {
    try {
      const outcome = result.interrupted
        ? undefined
        : await averagedModel(
            model,
            averaging,
            decoded.train,
            averagingJudge(decoded, monitor, result.history, checkpoint),
            cfg,
            bestDir,
            log,
          );
      if (outcome) writeJsonAtomic(path.join(runDir, RUN_FILES.averaging), outcome);
      averagingOutcome = outcome;
      if (outcome?.kept) return { model, result, bestEpoch: checkpoint.bestEpoch, averaging: outcome };
    } finally {
      averaging.dispose();
    }
  }
  if (!fs.existsSync(path.join(bestDir, 'model.json'))) {
    // No finite val_loss was ever seen (e.g. an empty validation split, or stopped before the first epoch ended).
    log(
      result.history.length
        ? 'No best checkpoint (validation loss never finite); keeping the final weights.'
        : 'No epoch completed, so there is no checkpoint yet.',
    );
    return { model, result, bestEpoch: null, averaging: averagingOutcome };
  }
  model.dispose();
  const best = await loadModel(bestDir);
  return { model: best, result, bestEpoch: checkpoint.bestEpoch, averaging: averagingOutcome };
}

export interface AveragingJudge {
  judgedOn: AveragingOutcome['judgedOn'];
  images: DecodedSplit['val'] | undefined;
  bestLoss: number | null;
}

/**
 * Where the mean and the best epoch are compared: on the validation split that did not choose the best epoch, when
 * the run has both. The best epoch's loss on the split that chose it is the lowest of every epoch's, so it flatters
 * the best epoch; its loss on the other split, logged in the same epoch, is a fair opponent. With one split, that one.
 */
export function averagingJudge(
  decoded: Pick<DecodedSplit, 'val' | 'valTime'>,
  monitor: MonitoredLoss,
  history: readonly EpochLogs[],
  checkpoint: { best: number | null; bestEpoch: number | null },
): AveragingJudge {
  const other: MonitoredLoss = monitor === 'val_loss' ? 'val_time_loss' : 'val_loss';
  const otherImages = other === 'val_loss' ? decoded.val : decoded.valTime;
  const bestRow = history.find((h) => h.epoch === checkpoint.bestEpoch);
  const otherBest = bestRow?.[other];
  if (otherImages?.labels.length && otherBest !== undefined && Number.isFinite(otherBest)) {
    return { judgedOn: other, images: otherImages, bestLoss: otherBest };
  }
  return { judgedOn: monitor, images: monitor === 'val_loss' ? decoded.val : decoded.valTime, bestLoss: checkpoint.best };
}

/**
 * Puts the weight average into `model` and re-estimates its batch-norm statistics on the training films. The mean
 * replaces the best epoch as the run's model only when it scores at least as well (`averagingJudge`): a run still
 * improving at its last epoch (a short run, the demo set) averages in weights it has since left behind.
 * Returns what it did, or undefined when no epoch was averaged. When the mean is not kept, `model` holds it unused
 * and the best epoch on disk stays the run's model.
 */
async function averagedModel(
  model: tf.LayersModel,
  averaging: ReturnType<typeof weightAveraging>,
  train: DecodedSplit['train'],
  judge: AveragingJudge,
  cfg: PipelineConfig,
  modelDir: string,
  log: (line: string) => void,
): Promise<AveragingOutcome | undefined> {
  const epochs = [...averaging.epochs];
  if (!averaging.applyTo(model)) {
    log(`Weight averaging: training ended before epoch ${swaStartEpoch(cfg.train)}; keeping the best epoch.`);
    return undefined;
  }
  const started = Date.now();
  const batches = await recomputeBatchNormStats(model, train, cfg.train.batchSize);
  const loss = judge.images?.labels.length ? logLoss(judge.images.labels, await predictProbabilities(model, judge.images)) : NaN;
  const { judgedOn, bestLoss } = judge;
  const outcome: AveragingOutcome = { epochs, judgedOn, loss, bestLoss, kept: bestLoss === null || loss <= bestLoss };
  const scores = `${judgedOn} ${loss.toFixed(4)}` + (bestLoss === null ? '' : `, the best epoch's ${bestLoss.toFixed(4)}`);
  const span = `the mean of epochs ${epochs[0]}-${epochs[epochs.length - 1]} (${epochs.length})`;
  const bn = `batch-norm statistics re-estimated over ${batches} training batches; ${((Date.now() - started) / 1000).toFixed(1)} s`;
  if (!outcome.kept) {
    log(`Weight averaging: ${span} scored ${scores}; keeping the best epoch (${bn}).`);
    return outcome;
  }
  setAsideBestEpoch(path.dirname(modelDir));
  await saveModel(model, modelDir);
  log(`Weight averaging: the model is ${span}: ${scores}; ${bn}.`);
  return outcome;
}

/** Before the mean replaces `model/`, the best epoch moves to `checkpoints/best-epoch`, so a resume can restore it. */
function setAsideBestEpoch(runDir: string): void {
  const model = path.join(runDir, RUN_FILES.model);
  const aside = path.join(runDir, RUN_FILES.bestEpoch);
  fs.rmSync(aside, { recursive: true, force: true });
  if (fs.existsSync(model)) fs.renameSync(model, aside);
}

/**
 * A resumed run trains on with `model/` as the best epoch's checkpoint, which the callbacks compare against: if an
 * earlier end of this run put the weight average there, the best epoch comes back first (and averaging decides
 * again at the new end).
 */
function restoreBestEpoch(runDir: string, log: (line: string) => void): void {
  // The folder set aside exists exactly while model/ holds the mean (or, after a crash in between, nothing).
  const aside = path.join(runDir, RUN_FILES.bestEpoch);
  if (fs.existsSync(path.join(aside, 'model.json'))) {
    const model = path.join(runDir, RUN_FILES.model);
    fs.rmSync(model, { recursive: true, force: true });
    fs.renameSync(aside, model);
    log(`Resume: ${RUN_FILES.model}/ is the best epoch's checkpoint again (it held the weight average).`);
  }
  fs.rmSync(path.join(runDir, RUN_FILES.averaging), { force: true });
}

/** Step 5: threshold chosen on validation (`thresholdOn`), applied to test. */
export async function evaluateRun(
  model: tf.LayersModel,
  decoded: Pick<DecodedSplit, 'val' | 'test' | 'valTime'>,
  rule: ThresholdRule,
  opts: { thresholdOn?: ThresholdSplit; tta?: number } = {},
): Promise<EvalResult> {
  return evaluate(model, { val: decoded.val, test: decoded.test, valTime: decoded.valTime }, { rule, ...opts });
}
