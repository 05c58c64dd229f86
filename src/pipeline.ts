/**
 * The end-to-end run: discover -> split -> decode -> build -> train (checkpoint, early stopping, LR schedule,
 * history, progress) -> restore best weights -> evaluate (threshold from val, applied to test) -> write the run.
 *
 * Each step is its own exported function so a notebook can run them one per cell; `runPipeline` chains them.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { Dataset, Label, Split, SplitName } from './types';
import { LABELS } from './types';
import { discoverDataset } from './data/discover';
import { assertNoPatientLeak, loadSplit, saveSplit, splitDataset, splitSummary } from './data/split';
import { decodeSplit, type DecodedParts, type ResizeFit } from './data/decode';
import { buildModel, type ModelVariant } from './model';
import { initBackend, describeBackend, backendInfo, type BackendInfo, type BackendName } from './accel';
import { evaluate, predictionsToCsv, type EvalResult, type SplitMetrics, THRESHOLD_SPLIT_NAMES, type ThresholdSplit } from './evaluate';
import type { ThresholdRule } from './metrics';
import type { InputNormalization } from './normalization';
import { formatAugment } from './augment';
import { makeRng, shuffled } from './random';
import { DEFAULT_TRAIN, train, type EpochLogs, type TrainConfig, type TrainResult } from './train/train';
import {
  type Callback,
  earlyStopping,
  historyWriter,
  loadLatestCheckpoint,
  modelCheckpoint,
  reduceLROnPlateau,
  writeHistory,
} from './train/callbacks';
import { progress, type ProgressOptions } from './train/progress';
import { DEFAULT_RUNS_DIR, RUN_FILES, createRunDir, loadModel, writeFileAtomic, writeJsonAtomic } from './runs/layout';
import { formatThresholdRule, runLabel } from './runs/naming';
import { toMetricsFile, writeMetrics, type MetricsFile } from './runs/metrics-file';
import { readRunConfig, type RunConfigFile } from './runs/read';
import { acquireRunLock } from './runs/lock';

export { formatThresholdRule, readRunConfig, type RunConfigFile };

export interface PipelineConfig {
  /** Dataset root in the Kaggle layout. */
  data: string;
  /** Parent folder of run directories. */
  out: string;
  name?: string;
  imageSize: number;
  variant: ModelVariant;
  train: TrainConfig;
  /** valTimeFraction: the out-of-time validation share (src/data/acquisition.ts); 0 or absent for none. */
  split: { seed: number; valFraction: number; testFraction: number; valTimeFraction?: number };
  threshold: ThresholdRule;
  backend?: BackendName;
  /** Run directory to continue from its last completed epoch. */
  resume?: string;
  /** Use at most this many images per folder (source split x class) for quick runs. */
  limit?: number;
  fit?: ResizeFit;
  /** Decode cache folder; null disables; default: the decoder's default (outputs/cache). */
  cacheDir?: string | null;
  /** Early-stopping patience in epochs on val_loss; 0 disables. */
  patience: number;
  /** ReduceLROnPlateau on the monitored loss. */
  reduceLR: { factor: number; patience: number; minLr: number };
  /** Per-image intensity normalization, the model's first layer (src/normalization.ts). */
  normalize?: InputNormalization;
  /** The loss that picks the best epoch, stops early and lowers the learning rate. */
  monitor?: MonitoredLoss;
  /** Which validation split the threshold rule is applied to (`pooled`: both validation splits together). */
  thresholdOn?: ThresholdSplit;
  /** Test-time augmentation: average the probabilities over this many fixed views (1 = the image only). */
  tta?: number;
}

/** val_time_loss needs an out-of-time split (split.valTimeFraction > 0). */
export type MonitoredLoss = 'val_loss' | 'val_time_loss';

export const DEFAULT_PIPELINE: PipelineConfig = {
  data: path.join('data', 'chest_xray'),
  out: DEFAULT_RUNS_DIR,
  imageSize: 150,
  variant: 'seed',
  train: { ...DEFAULT_TRAIN },
  split: { seed: 42, valFraction: 0.1, testFraction: 0.15, valTimeFraction: 0.1 },
  // A screening test: keep 98% of validation pneumonia cases, then be as specific as that allows.
  threshold: { kind: 'recall', target: 0.98 },
  patience: 5,
  reduceLR: { factor: 0.3, patience: 2, minLr: 1e-6 },
  fit: 'fill',
  normalize: 'none',
  monitor: 'val_loss',
  thresholdOn: 'val',
  tta: 1,
};

/** The seed article's test metrics (percent), for the summary table; specificity was not reported. */
export const SEED_ARTICLE_METRICS = { accuracy: 91.0, precision: 89.8, recall: 96.7, specificity: null, f1: 93.1 } as const;

export interface PipelineHooks {
  /** Human-readable progress lines (default: console.log). */
  log?: (line: string) => void;
  /** Progress display options, or false for none. */
  progress?: ProgressOptions | false;
  /** Extra callbacks (e.g. a live plot in a notebook). */
  callbacks?: Callback[];
  signal?: AbortSignal;
  /** Ctrl-C stops cleanly (CLI). */
  handleSigint?: boolean;
  /** Called once the run folder exists (before training), e.g. to record it in a sweep manifest. */
  onRunDir?: (runDir: string) => void;
}

export interface RunResult {
  runDir: string;
  config: PipelineConfig;
  backend: BackendInfo;
  history: EpochLogs[];
  bestEpoch: number | null;
  stopReason?: string;
  interrupted: boolean;
  /** Absent when training was interrupted (nothing is evaluated then). */
  evaluation?: EvalResult;
  /** The best model; the caller owns it (dispose when done). */
  model?: tf.LayersModel;
}

// ---------------------------------------------------------------------------------------------------------
// Steps

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

function countBy(images: Dataset['images']): string {
  const counts = new Map<string, number>();
  for (const img of images) counts.set(`${img.source}/${img.label}`, (counts.get(`${img.source}/${img.label}`) ?? 0) + 1);
  return [...counts.entries()].map(([k, n]) => `${k} ${n}`).join(', ');
}

/** Step 1: discover the dataset (and optionally cut it down for a quick run). */
export async function loadData(
  dataDir: string,
  opts: { limit?: number; seed?: number; log?: (line: string) => void } = {},
): Promise<Dataset> {
  const log = opts.log ?? console.log;
  let ds = await discoverDataset(dataDir);
  log(`Data: ${ds.root}: ${ds.images.length} images (${countBy(ds.images)})`);
  if (ds.skipped.length) {
    log(
      `  skipped ${ds.skipped.length} file(s): ${ds.skipped
        .slice(0, 3)
        .map((s) => `${path.basename(s.path)} (${s.reason})`)
        .join(', ')}${ds.skipped.length > 3 ? ', ...' : ''}`,
    );
  }
  if (opts.limit) {
    ds = limitDataset(ds, opts.limit, opts.seed ?? 42);
    log(`  --limit ${opts.limit}: using ${ds.images.length} images (${countBy(ds.images)})`);
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
  /** The best model by val_loss (its weights restored from the checkpoint). */
  model: tf.LayersModel;
  result: TrainResult;
  bestEpoch: number | null;
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
  const callbacks: Callback[] = [
    historyWriter({ dir: runDir }),
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
  if (!fs.existsSync(path.join(bestDir, 'model.json'))) {
    // No finite val_loss was ever seen (e.g. an empty validation split, or stopped before the first epoch ended).
    log(
      result.history.length
        ? 'No best checkpoint (validation loss never finite); keeping the final weights.'
        : 'No epoch completed, so there is no checkpoint yet.',
    );
    return { model, result, bestEpoch: null };
  }
  model.dispose();
  const best = await loadModel(bestDir);
  return { model: best, result, bestEpoch: checkpoint.bestEpoch };
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

/** Parses `youden`, `recall=0.97` or `fixed=0.5`. */
export function parseThresholdRule(spec: string): ThresholdRule {
  const s = spec.trim().toLowerCase();
  if (s === 'youden') return { kind: 'youden' };
  const m = /^(recall|fixed)=([0-9]*\.?[0-9]+)$/.exec(s);
  if (m) {
    const value = Number(m[2]);
    if (!(value >= 0 && value <= 1)) throw new Error(`threshold ${m[1]} must be between 0 and 1 (got ${m[2]}).`);
    return m[1] === 'recall' ? { kind: 'recall', target: value } : { kind: 'fixed', value };
  }
  throw new Error(`threshold '${spec}' is not understood; use youden, recall=0.97 or fixed=0.5.`);
}

const pct = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(1) : '-');
const auc = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : '-');

/** summary.md: what ran, on what, and how the test metrics compare with the seed article. */
export function summaryMarkdown(args: {
  runDir: string;
  config: PipelineConfig;
  backend: string;
  history: readonly EpochLogs[];
  bestEpoch: number | null;
  stopReason?: string;
  interrupted: boolean;
  evaluation?: EvalResult;
  counts?: Record<SplitName, Record<Label, number>>;
  testSource?: Split['testSource'];
}): string {
  const { config, evaluation: ev } = args;
  const lines = [
    `# Run ${path.basename(args.runDir)}`,
    '',
    `- Data: \`${config.data}\`${config.limit ? ` (limited to ${config.limit} images per folder and class)` : ''}`,
  ];
  if (args.counts) {
    for (const name of ['train', 'val', 'test'] as SplitName[]) {
      lines.push(`  - ${name}: ${LABELS.map((l) => `${args.counts![name][l]} ${l}`).join(', ')}`);
    }
  }
  if (args.testSource)
    lines.push(
      `- Test set: ${args.testSource === 'official' ? "the dataset's own test/ folder" : 'carved from train, grouped by patient'}`,
    );
  const t = config.train;
  lines.push(
    `- Backend: ${args.backend.replace(/^backend:\s*/, '')}`,
    `- Model: ${config.variant} at ${config.imageSize}x${config.imageSize}; Adam lr ${t.learningRate}, batch ${t.batchSize}, ` +
      `class weights ${t.classWeights}, augment ${formatAugment(t.augment) || 'none'}, seed ${t.seed}` +
      (config.normalize && config.normalize !== 'none' ? `, normalize ${config.normalize}` : '') +
      (t.labelSmoothing ? `, label smoothing ${t.labelSmoothing}` : '') +
      (t.mixup ? `, mixup ${t.mixup}` : '') +
      (config.tta && config.tta > 1 ? `, test-time augmentation ${config.tta} views` : ''),
    `- Epochs run: ${args.history.length} of ${t.epochs}${args.stopReason ? ` (${args.stopReason})` : ''}; ` +
      `best epoch (lowest ${config.monitor ?? 'val_loss'}): ${args.bestEpoch ?? '-'}`,
  );
  if (args.interrupted || !ev) {
    lines.push(
      '',
      `Training was interrupted; no evaluation was done. Continue with:`,
      '',
      '```',
      `npm start -- --resume ${args.runDir}`,
      '```',
    );
    return lines.join('\n') + '\n';
  }
  const row = (name: string, m: SplitMetrics) =>
    `| ${name} | ${pct(m.accuracy)} | ${pct(m.precision)} | ${pct(m.recall)} | ${pct(m.specificity)} | ${pct(m.f1)} | ${auc(m.auc)} |`;
  const a = SEED_ARTICLE_METRICS;
  lines.push(
    `- Threshold: ${ev.threshold.toFixed(4)} (rule ${formatThresholdRule(ev.thresholdRule)}, chosen on the ${THRESHOLD_SPLIT_NAMES[ev.thresholdOn ?? 'val']} only)`,
    '',
    '| | Accuracy % | Precision % | Recall % | Specificity % | F1 % | AUC |',
    '|---|---|---|---|---|---|---|',
    row('This run, test', ev.test),
    row('This run, validation', ev.val),
    ...(ev.valTime ? [row('This run, out-of-time validation', ev.valTime)] : []),
    `| Seed article, test | ${a.accuracy.toFixed(1)} | ${a.precision.toFixed(1)} | ${a.recall.toFixed(1)} | - | ${a.f1.toFixed(1)} | - |`,
    '',
    `Test confusion: TP ${ev.test.confusion.tp}, FP ${ev.test.confusion.fp}, TN ${ev.test.confusion.tn}, FN ${ev.test.confusion.fn}.`,
  );
  if (config.data.includes('demo')) {
    lines.push('', '_The data is the synthetic demo set, not medical images: these numbers say nothing about pneumonia._');
  }
  return lines.join('\n') + '\n';
}

function countsOf(decoded: DecodedSplit): Record<SplitName, Record<Label, number>> {
  const out = {} as Record<SplitName, Record<Label, number>>;
  for (const name of ['train', 'val', 'test'] as SplitName[]) {
    const positives = decoded[name].labels.reduce((s, v) => s + v, 0);
    out[name] = { NORMAL: decoded[name].labels.length - positives, PNEUMONIA: positives };
  }
  return out;
}

/**
 * metrics.json and predictions.csv of an evaluated run: the one writer `npm start` and notebook 05 share, so
 * predict, the comparison and the report read one schema.
 */
export function writeEvaluation(
  runDir: string,
  evaluation: EvalResult,
  run: { bestEpoch: number | null; epochsRun: number; imageSize: number; writtenBy: string },
): MetricsFile {
  const metrics = toMetricsFile(evaluation, run);
  writeMetrics(path.join(runDir, RUN_FILES.metrics), metrics);
  writeFileAtomic(path.join(runDir, RUN_FILES.predictions), predictionsToCsv(evaluation.predictions));
  return metrics;
}

/** Step 6: metrics.json, predictions.csv, history files and summary.md. */
export function writeRun(
  runDir: string,
  args: {
    config: PipelineConfig;
    backend: string;
    history: EpochLogs[];
    bestEpoch: number | null;
    stopReason?: string;
    interrupted: boolean;
    evaluation?: EvalResult;
    decoded?: DecodedSplit;
    testSource?: Split['testSource'];
  },
): void {
  writeHistory(runDir, args.history);
  if (args.evaluation) {
    writeEvaluation(runDir, args.evaluation, {
      bestEpoch: args.bestEpoch,
      epochsRun: args.history.length,
      imageSize: args.config.imageSize,
      writtenBy: 'npm start',
    });
  }
  writeFileAtomic(
    path.join(runDir, RUN_FILES.summary),
    summaryMarkdown({ ...args, runDir, counts: args.decoded ? countsOf(args.decoded) : undefined }),
  );
}

/** config.json; `resume` is left out so the stored settings start the same run again. */
export function writeRunConfig(runDir: string, cfg: PipelineConfig, backend: BackendInfo, dataRoot: string): void {
  const { resume: _resume, ...settings } = cfg;
  const file: RunConfigFile = {
    config: settings,
    backend: describeBackend(backend),
    dataRoot,
    createdAt: new Date().toISOString(),
    tfjs: tf.version.tfjs,
  };
  writeJsonAtomic(path.join(runDir, RUN_FILES.config), file);
}

/** A new run folder under `cfg.out`, named by time and the hyperparameters that differ from the defaults. */
export function newRunDir(cfg: PipelineConfig): string {
  return createRunDir(cfg.out, runLabel(cfg, DEFAULT_PIPELINE));
}

/** For notebooks: creates the run folder and writes config.json (call after initBackend). Returns the folder. */
export function startRun(cfg: PipelineConfig, dataRoot: string = cfg.data): string {
  const runDir = newRunDir(cfg);
  const backend = backendInfo() ?? { name: tf.getBackend() as BackendName, threads: 1, skipped: [] };
  writeRunConfig(runDir, cfg, backend, dataRoot);
  return runDir;
}

/**
 * Runs every step and writes the run directory, holding the run's lock throughout (a second writer of the same
 * run, e.g. a `--resume` while this one trains, stops with a message naming this process).
 */
export async function runPipeline(cfg: PipelineConfig, hooks: PipelineHooks = {}): Promise<RunResult> {
  const log = hooks.log ?? console.log;
  const backend = await initBackend({ prefer: cfg.backend, quiet: true });
  log(describeBackend(backendInfo() ?? backend));

  let runDir: string;
  let split: Split;
  let dataRoot: string;
  if (cfg.resume) {
    runDir = path.resolve(cfg.resume);
    const splitFile = path.join(runDir, RUN_FILES.split);
    if (!fs.existsSync(splitFile)) throw new Error(`Cannot resume ${runDir}: it has no ${RUN_FILES.split}.`);
    // Before reading anything: a run another process is writing is not ours to continue.
    const lock = acquireRunLock(runDir);
    if (lock.tookOver) log(lock.tookOver);
    hooks.onRunDir?.(runDir);
    try {
      // The same images in the same splits: re-splitting could move patients between train and test.
      split = await loadSplit(splitFile);
      dataRoot = cfg.data;
      log(`Resuming ${runDir} with its saved split (${split.train.length}/${split.val.length}/${split.test.length} train/val/test)`);
      return await trainAndEvaluate(cfg, runDir, split, dataRoot, backend, hooks);
    } finally {
      lock.release();
    }
  }
  const ds = await loadData(cfg.data, { limit: cfg.limit, seed: cfg.split.seed, log });
  dataRoot = ds.root;
  runDir = newRunDir(cfg);
  const lock = acquireRunLock(runDir);
  hooks.onRunDir?.(runDir);
  try {
    log(`Run folder: ${runDir}`);
    split = await makeSplit(ds, { ...cfg.split, runDir, log });
    return await trainAndEvaluate(cfg, runDir, split, dataRoot, backend, hooks);
  } finally {
    lock.release();
  }
}

async function trainAndEvaluate(
  cfg: PipelineConfig,
  runDir: string,
  split: Split,
  dataRoot: string,
  backend: BackendInfo,
  hooks: PipelineHooks,
): Promise<RunResult> {
  const log = hooks.log ?? console.log;
  writeRunConfig(runDir, cfg, backend, dataRoot);

  const decoded = await decode(split, {
    imageSize: cfg.imageSize,
    fit: cfg.fit,
    cacheDir: cfg.cacheDir,
    progress: (process.stderr as NodeJS.WriteStream).isTTY === true,
    log,
  });
  const trained = await trainModel(decoded, cfg, runDir, hooks);
  const { result } = trained;
  const base = {
    config: cfg,
    backend: describeBackend(backend),
    history: result.history,
    bestEpoch: trained.bestEpoch,
    stopReason: result.stopReason,
    interrupted: result.interrupted,
    decoded,
    testSource: split.testSource,
  };
  if (result.interrupted) {
    writeRun(runDir, base);
    log(`Interrupted after ${result.history.length} completed epoch(s). Resume with: npm start -- --resume ${runDir}`);
    return {
      runDir,
      config: cfg,
      backend,
      history: result.history,
      bestEpoch: trained.bestEpoch,
      stopReason: result.stopReason,
      interrupted: true,
      model: trained.model,
    };
  }
  const evaluation = await evaluateRun(trained.model, decoded, cfg.threshold, { thresholdOn: cfg.thresholdOn, tta: cfg.tta });
  writeRun(runDir, { ...base, evaluation });
  const t = evaluation.test;
  log(
    `Test (threshold ${evaluation.threshold.toFixed(3)} from ${cfg.thresholdOn ?? 'val'}): accuracy ${pct(t.accuracy)}%, precision ${pct(t.precision)}%, ` +
      `recall ${pct(t.recall)}%, specificity ${pct(t.specificity)}%, F1 ${pct(t.f1)}%, AUC ${auc(t.auc)}`,
  );
  const vt = evaluation.valTime;
  if (vt) {
    log(
      `Out-of-time validation (same threshold): accuracy ${pct(vt.accuracy)}%, recall ${pct(vt.recall)}%, ` +
        `specificity ${pct(vt.specificity)}%, AUC ${auc(vt.auc)}`,
    );
  }
  log(`Wrote ${runDir}`);
  return {
    runDir,
    config: cfg,
    backend,
    history: result.history,
    bestEpoch: trained.bestEpoch,
    stopReason: result.stopReason,
    interrupted: false,
    evaluation,
    model: trained.model,
  };
}
