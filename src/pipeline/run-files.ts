/** The files a run writes into its folder: config.json, metrics.json, predictions.csv, history, summary.md. */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { Label, Split, SplitName } from '../types';
import { backendInfo, cpuDescription, describeBackend, formatCpu, nativeVectorLanes, type BackendInfo, type BackendName } from '../accel';
import { predictionsToCsv, type EvalResult } from '../evaluate';
import { writeHistory } from '../train/callbacks';
import { RUN_FILES, createRunDir } from '../runs/layout';
import { writeFileAtomic, writeJsonAtomic } from '../files';
import { runLabel } from '../runs/naming';
import { toMetricsFile, writeMetrics, type EvaluatedRunInfo, type MetricsFile } from '../runs/metrics-file';
import { type RunConfigFile } from '../runs/read';
import { DEFAULT_PIPELINE, type PipelineConfig, type RunResult } from './config';
import type { DecodedSplit } from './steps';
import { summaryMarkdown } from './summary';

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
export function writeEvaluation(runDir: string, evaluation: EvalResult, run: EvaluatedRunInfo): MetricsFile {
  const metrics = toMetricsFile(evaluation, run);
  writeMetrics(path.join(runDir, RUN_FILES.metrics), metrics);
  writeFileAtomic(path.join(runDir, RUN_FILES.predictions), predictionsToCsv(evaluation.predictions));
  return metrics;
}

/** Step 6: metrics.json, predictions.csv, history files and summary.md. */
export function writeRun(
  runDir: string,
  // The run's outcome as runPipeline returns it, with the backend as its description and what the summary counts.
  args: Omit<RunResult, 'runDir' | 'backend' | 'model'> & {
    backend: string;
    decoded?: DecodedSplit;
    testSource?: Split['testSource'];
  },
): void {
  writeHistory(runDir, args.history);
  if (args.evaluation) {
    writeEvaluation(runDir, args.evaluation, {
      bestEpoch: args.bestEpoch,
      averagedEpochs: args.averaging?.kept ? args.averaging.epochs : undefined,
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
    // The record keeps each convolution's algorithm and timings; logs and summary.md have a one-line summary.
    backend: describeBackend(backend, 'timings'),
    dataRoot,
    createdAt: new Date().toISOString(),
    tfjs: tf.version.tfjs,
    // Epoch times differ about 3x between this project's machines; the run says which one it had.
    cpu: formatCpu(cpuDescription({ nativeVectorLanes: nativeVectorLanes() })),
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
