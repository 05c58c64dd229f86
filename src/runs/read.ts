/**
 * Reading runs back: one function per question (which runs are there, what was this run's config, history,
 * metrics, model), used by predict, the comparison, notebooks 05/06 and the report alike.
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as tf from '@tensorflow/tfjs';
import type { PipelineConfig } from '../pipeline';
import type { EpochLogs } from '../train/train';
import type { AveragingOutcome } from '../train/swa';
import { DEFAULT_RUNS_DIR, RUN_FILES, SWEEP_FILE, isRunDir } from './layout';
import { loadModel } from './model-files';
import { readJson } from '../files';
import { readLock, isStale, type LockInfo } from './lock';
import { readMetrics, type MetricsFile } from './metrics-file';

/** Everything `config.json` records: the settings plus what they resolved to. */
export interface RunConfigFile {
  config: PipelineConfig;
  backend: string;
  dataRoot: string;
  createdAt: string;
  tfjs: string;
  /** The machine it trained on (formatCpu in src/accel/cpu.ts); absent in runs from before 2026-12-06. */
  cpu?: string;
}

export type RunStatus = 'evaluated' | 'trained' | 'interrupted' | 'started';

export interface Run {
  dir: string;
  /** The folder name: `<time>-<label>`. */
  name: string;
  config: PipelineConfig;
  createdAt: string;
  backend: string;
  dataRoot: string;
  history: EpochLogs[];
  metrics?: MetricsFile;
  /** What weight averaging decided at the end of training (absent: the run did not average, or it predates it). */
  averaging?: AveragingOutcome;
  status: RunStatus;
  /** The live writer, when one holds the run now. */
  writer?: LockInfo;
}

export function readRunConfigFile(runDir: string): RunConfigFile {
  const file = path.join(runDir, RUN_FILES.config);
  if (!fs.existsSync(file)) {
    throw new Error(`${runDir} has no ${RUN_FILES.config}; is it a run folder (outputs/runs/<time>-<label>)?`);
  }
  const parsed = readJson<RunConfigFile>(file);
  if (!parsed || typeof parsed.config !== 'object' || parsed.config === null || !parsed.config.train) {
    throw new Error(`${file} has no 'config.train' settings; it was not written by this project (npm start or notebook 04).`);
  }
  return parsed;
}

/** The settings a run was started with, for `--resume`. */
export function readRunConfig(runDir: string): PipelineConfig {
  return readRunConfigFile(runDir).config;
}

export function readHistory(runDir: string): EpochLogs[] {
  const file = path.join(runDir, RUN_FILES.historyJson);
  if (!fs.existsSync(file)) return [];
  const rows = readJson<EpochLogs[]>(file);
  if (!Array.isArray(rows)) throw new Error(`${file} is not a list of epochs; delete it and resume the run to rewrite it.`);
  return rows;
}

export function hasModel(runDir: string): boolean {
  return fs.existsSync(path.join(runDir, RUN_FILES.model, 'model.json'));
}

/** averaging.json, when the run averaged weights; a file that is not one names itself and the fix. */
function readAveraging(dir: string): AveragingOutcome | undefined {
  const file = path.join(dir, RUN_FILES.averaging);
  if (!fs.existsSync(file)) return undefined;
  const a = readJson<AveragingOutcome>(file);
  if (!a || typeof a.kept !== 'boolean' || !Array.isArray(a.epochs) || !a.epochs.every((e) => Number.isInteger(e) && e >= 1)) {
    throw new Error(`${file} does not record weight averaging (epochs, kept); delete it and resume the run to decide again.`);
  }
  return a;
}

export function readRun(runDir: string): Run {
  const dir = path.resolve(runDir);
  const cfg = readRunConfigFile(dir);
  const metricsFile = path.join(dir, RUN_FILES.metrics);
  const metrics = fs.existsSync(metricsFile) ? readMetrics(metricsFile) : undefined;
  const history = readHistory(dir);
  const averaging = readAveraging(dir);
  const lock = readLock(dir);
  const status: RunStatus = metrics ? 'evaluated' : hasModel(dir) ? 'trained' : history.length ? 'interrupted' : 'started';
  return {
    dir,
    name: path.basename(dir),
    config: cfg.config,
    createdAt: cfg.createdAt,
    backend: cfg.backend,
    dataRoot: cfg.dataRoot,
    history,
    metrics,
    ...(averaging ? { averaging } : {}),
    status,
    writer: lock && !isStale(lock) ? lock : undefined,
  };
}

export interface RunListing {
  runs: Run[];
  /** Folders that look like runs but could not be read, with the reason (shown, never skipped silently). */
  problems: { dir: string; message: string }[];
}

/** Run folders directly under `out`, and inside its sweep folders (one level down). */
function runFolders(out: string): string[] {
  const dirs: string[] = [];
  for (const e of fs.readdirSync(out, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith('.')) continue;
    const dir = path.resolve(out, e.name);
    if (isRunDir(dir)) dirs.push(dir);
    else if (fs.existsSync(path.join(dir, SWEEP_FILE))) dirs.push(...runFolders(dir).filter((d) => path.dirname(d) === dir));
  }
  return dirs;
}

/** Every run folder under `out` (sweeps' runs included), oldest first (by creation time, then name). */
export function listRuns(out: string = DEFAULT_RUNS_DIR): RunListing {
  const listing: RunListing = { runs: [], problems: [] };
  if (!fs.existsSync(out)) return listing;
  for (const dir of runFolders(out)) {
    try {
      listing.runs.push(readRun(dir));
    } catch (err) {
      listing.problems.push({ dir, message: (err as Error).message });
    }
  }
  listing.runs.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  return listing;
}

/** The newest run folder under `out` that holds a saved model, or undefined. */
export function findLatestRun(out: string = DEFAULT_RUNS_DIR): string | undefined {
  if (!fs.existsSync(out)) return undefined;
  const withModel = fs
    .readdirSync(out, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .map((e) => path.resolve(out, e.name))
    .filter(hasModel)
    .map((dir) => ({ dir, created: createdAt(dir) }))
    .sort((a, b) => a.created.localeCompare(b.created) || a.dir.localeCompare(b.dir));
  return withModel[withModel.length - 1]?.dir;
}

function createdAt(dir: string): string {
  try {
    return readRunConfigFile(dir).createdAt ?? '';
  } catch {
    return '';
  }
}

/**
 * A run named on the command line or in a notebook: a path to a run folder, a folder name under `out`, or a
 * unique part of one (`lr3e-4`). Ambiguity and absence are errors listing what there is.
 */
export function resolveRun(ref: string, out: string = DEFAULT_RUNS_DIR): string {
  const direct = path.resolve(ref);
  if (isRunDir(direct)) return direct;
  const underOut = path.resolve(out, ref);
  if (isRunDir(underOut)) return underOut;
  const dirs = fs.existsSync(out) ? runFolders(out).sort() : [];
  const names = dirs.map((d) => path.relative(out, d));
  const matches = dirs.filter((d) => path.basename(d).includes(ref));
  if (matches.length === 1) return matches[0];
  if (matches.length > 1)
    throw new Error(
      `'${ref}' matches ${matches.length} runs under ${out}: ${matches.map((d) => path.basename(d)).join(', ')}; give more of the name.`,
    );
  throw new Error(
    `No run '${ref}' (not a run folder, nor a run under ${out})` +
      (names.length
        ? `; runs there: ${names.slice(-8).join(', ')}`
        : `; ${out} holds no runs yet (train one with npm start or notebook 04)`) +
      '.',
  );
}

/** The run's best model (the checkpoint with the lowest val_loss); the caller disposes it. */
export async function loadRunModel(runDir: string): Promise<tf.LayersModel> {
  const dir = path.join(runDir, RUN_FILES.model);
  if (!fs.existsSync(path.join(dir, 'model.json'))) {
    throw new Error(
      `${runDir} has no trained model (${path.join(RUN_FILES.model, 'model.json')}); train it first (npm start -- --resume ${runDir}, or notebook 04).`,
    );
  }
  return loadModel(dir);
}

/** The epoch with the lowest finite val_loss (the one the checkpoint kept), or undefined when none finished. */
export function bestEpoch(history: readonly EpochLogs[]): EpochLogs | undefined {
  let best: EpochLogs | undefined;
  for (const h of history) if (Number.isFinite(h.val_loss) && (!best || h.val_loss < best.val_loss)) best = h;
  return best;
}
