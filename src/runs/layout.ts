/**
 * The run layout: a run directory holds everything one training run produced: config, split, history, metrics,
 * predictions, the best model and a resumable checkpoint. This module owns the folder and file names;
 * model-files.ts saves models, read.ts reads runs back, lock.ts keeps one writer per run, and every file is written
 * atomically (src/files.ts) so a crash or Ctrl-C never leaves a half-written file for a later `--resume` or report.
 */
import * as fs from 'fs';
import * as path from 'path';

export const DEFAULT_RUNS_DIR = path.join('outputs', 'runs');

/** A sweep folder's manifest; the sweep's runs are the folders beside it. */
export const SWEEP_FILE = 'sweep.json';

/** Files inside a run directory; one place so pipeline, CLI, report and notebooks agree on names. */
export const RUN_FILES = {
  config: 'config.json',
  split: 'split.json',
  historyJson: 'history.json',
  historyCsv: 'history.csv',
  metrics: 'metrics.json',
  predictions: 'predictions.csv',
  summary: 'summary.md',
  model: 'model',
  latest: path.join('checkpoints', 'latest'),
  /** The running weight average, when the run averages weights (train/swa.ts). */
  swa: path.join('checkpoints', 'swa'),
  /** What weight averaging decided (swa.ts AveragingOutcome); when its mean became `model`, the best epoch waits here. */
  averaging: 'averaging.json',
  bestEpoch: path.join('checkpoints', 'best-epoch'),
  /** Who is writing the run right now (see lock.ts). */
  lock: '.lock',
} as const;

/** `2026-11-26T01-02-03` — sortable, and safe in file names on every OS. */
export function timestampForPath(date = new Date()): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/:/g, '-');
}

/** Turns a free-form run name into something safe for a folder name. */
export function sanitizeName(name: string): string {
  return name
    .trim()
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60);
}

/**
 * Creates `<out>/<timestamp>-<label>/` and returns its absolute path. `mkdir` without `recursive` fails when the
 * folder exists, so two processes starting in the same second get different folders and no run is ever reused.
 */
export function createRunDir(out: string = DEFAULT_RUNS_DIR, name = 'run', date = new Date()): string {
  fs.mkdirSync(out, { recursive: true });
  const base = `${timestampForPath(date)}-${sanitizeName(name) || 'run'}`;
  for (let n = 1; ; n++) {
    const dir = path.resolve(out, n === 1 ? base : `${base}-${n}`);
    try {
      fs.mkdirSync(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** True when `dir` looks like a run folder (it has config.json). */
export function isRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, RUN_FILES.config));
}
