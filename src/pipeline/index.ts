/**
 * The end-to-end run: discover -> split -> decode -> build -> train (checkpoint, early stopping, LR schedule,
 * history, progress) -> restore best weights -> evaluate (threshold from val, applied to test) -> write the run.
 *
 * Each step is its own exported function so a notebook can run them one per cell; `runPipeline` chains them.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Split } from '../types';
import { loadSplit } from '../data/split';
import { initBackend, describeBackend, backendInfo, type BackendInfo } from '../accel';
import { RUN_FILES } from '../runs/layout';
import { formatThresholdRule } from '../runs/naming';
import { readRunConfig, type RunConfigFile } from '../runs/read';
import { acquireRunLock } from '../runs/lock';
import type { PipelineConfig, PipelineHooks, RunResult } from './config';
import { decode, evaluateRun, loadData, makeSplit, trainModel } from './steps';
import { formatAuc, formatPercent } from '../format';
import { newRunDir, writeRun, writeRunConfig } from './run-files';

export { formatThresholdRule, readRunConfig, type RunConfigFile };

export * from './config';
export * from './steps';
export * from './summary';
export * from './run-files';

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
    averaging: trained.averaging,
    stopReason: result.stopReason,
    interrupted: result.interrupted,
    decoded,
    testSource: split.testSource,
  };
  const outcome: RunResult = {
    runDir,
    config: cfg,
    backend,
    history: result.history,
    bestEpoch: trained.bestEpoch,
    averaging: trained.averaging,
    stopReason: result.stopReason,
    interrupted: result.interrupted,
    model: trained.model,
  };
  if (result.interrupted) {
    writeRun(runDir, base);
    log(`Interrupted after ${result.history.length} completed epoch(s). Resume with: npm start -- --resume ${runDir}`);
    return outcome;
  }
  const evaluation = await evaluateRun(trained.model, decoded, cfg.threshold, { thresholdOn: cfg.thresholdOn, tta: cfg.tta });
  writeRun(runDir, { ...base, evaluation });
  const t = evaluation.test;
  if (evaluation.thresholdNote) log(`Threshold: ${evaluation.thresholdNote}.`);
  log(
    `Test (threshold ${evaluation.threshold.toFixed(3)} from ${cfg.thresholdOn ?? 'val'}): accuracy ${formatPercent(t.accuracy)}%, precision ${formatPercent(t.precision)}%, ` +
      `recall ${formatPercent(t.recall)}%, specificity ${formatPercent(t.specificity)}%, F1 ${formatPercent(t.f1)}%, AUC ${formatAuc(t.auc)}`,
  );
  const vt = evaluation.valTime;
  if (vt) {
    log(
      `Out-of-time validation (same threshold): accuracy ${formatPercent(vt.accuracy)}%, recall ${formatPercent(vt.recall)}%, ` +
        `specificity ${formatPercent(vt.specificity)}%, AUC ${formatAuc(vt.auc)}`,
    );
  }
  log(`Wrote ${runDir}`);
  return { ...outcome, evaluation };
}
