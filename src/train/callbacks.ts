/**
 * Keras-like training callbacks. Each is a plain object with optional hooks; they compose by listing them.
 * Callbacks with counters (`name` + `getState`/`setState`) are persisted in the `latest` checkpoint so a
 * resumed run continues with the same best values, patience counters and learning rate.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { Callback, EpochLogs, ResumeState, TrainConfig, TrainContext } from './types';
import {
  type NamedTensor,
  loadModel,
  readNamedTensors,
  saveModel,
  writeNamedTensors,
  modelArtifacts,
  writeModelFiles,
} from '../runs/model-files';
import { RUN_FILES } from '../runs/layout';
import { readJson, writeCsvAtomic, writeDirAtomic, writeJsonAtomic } from '../files';

export type { Callback };

export type MonitorKey = Exclude<keyof EpochLogs, 'epoch' | 'seconds' | 'lr'>;
export type MonitorMode = 'auto' | 'min' | 'max';

/** 'auto' means: accuracies and AUCs improve upwards, losses downwards (as in Keras). */
export function resolveMode(monitor: string, mode: MonitorMode = 'auto'): 'min' | 'max' {
  if (mode !== 'auto') return mode;
  return /acc|auc/.test(monitor) ? 'max' : 'min';
}

function isImprovement(value: number, best: number | null, mode: 'min' | 'max', minDelta = 0): boolean {
  if (!Number.isFinite(value)) return false;
  if (best === null) return true;
  return mode === 'min' ? value < best - minDelta : value > best + minDelta;
}

function monitored(logs: EpochLogs, monitor: string): number {
  const value = (logs as unknown as Record<string, number>)[monitor];
  if (value === undefined) {
    throw new Error(`Callback monitors '${monitor}', which is not in the epoch logs (${Object.keys(logs).join(', ')}).`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints

export interface CheckpointOptions {
  /** The run directory: the best model goes to `<dir>/model`, the resume point to `<dir>/checkpoints/latest`. */
  dir: string;
  monitor?: MonitorKey;
  mode?: MonitorMode;
  /** Write the resumable `latest` checkpoint every epoch (default true). */
  saveLatest?: boolean;
}

interface CheckpointState {
  best: number | null;
  bestEpoch: number | null;
}

export interface CheckpointCallback extends Callback {
  readonly bestEpoch: number | null;
  readonly best: number | null;
  readonly bestDir: string;
}

/** What `checkpoints/latest/state.json` holds next to the model and optimizer files. */
export interface LatestCheckpointFile extends ResumeState {
  trainConfig: TrainConfig;
  savedAt: string;
}

const OPTIMIZER_BASENAME = 'optimizer';
const STATE_FILE = 'state.json';

/** Collects every named callback's state, for the checkpoint. */
export function callbackStates(callbacks: readonly Callback[]): Record<string, unknown> {
  const states: Record<string, unknown> = {};
  for (const cb of callbacks) if (cb.name && cb.getState) states[cb.name] = cb.getState();
  return states;
}

/** Model + Adam state + history + callback counters, written as one atomic directory. */
export async function saveLatestCheckpoint(dir: string, ctx: TrainContext): Promise<void> {
  const optimizerWeights = await ctx.optimizer.getWeights();
  const artifacts = await modelArtifacts(ctx.model);
  const state: LatestCheckpointFile = {
    epoch: ctx.history.length,
    history: ctx.history,
    learningRate: ctx.getLearningRate(),
    callbackStates: callbackStates(ctx.callbacks),
    trainConfig: ctx.config,
    savedAt: new Date().toISOString(),
  };
  try {
    await writeDirAtomic(dir, async (tmp) => {
      writeModelFiles(tmp, artifacts);
      await writeNamedTensors(tmp, OPTIMIZER_BASENAME, optimizerWeights);
      fs.writeFileSync(path.join(tmp, STATE_FILE), JSON.stringify(state, null, 2));
    });
  } finally {
    // getWeights returns the optimizer's live variables except the fresh `iter` scalar; only that one is ours.
    optimizerWeights.filter((w) => w.name === 'iter').forEach((w) => w.tensor.dispose());
  }
}

export interface LoadedCheckpoint {
  model: tf.LayersModel;
  /** Owned by the caller: dispose after passing to `train`. */
  optimizerState: NamedTensor[];
  state: LatestCheckpointFile;
}

/**
 * The folder holding the newest complete checkpoint. Normally `checkpoints/latest`; if the process died between
 * the two renames that replace it, the complete copy is still in a `.latest.tmp-*` sibling (state.json is
 * written last, so a folder that has it is complete).
 */
function latestCheckpointDir(runDir: string): string | undefined {
  const dir = path.join(runDir, RUN_FILES.latest);
  if (fs.existsSync(path.join(dir, STATE_FILE))) return dir;
  const parent = path.dirname(dir);
  if (!fs.existsSync(parent)) return undefined;
  const prefix = `.${path.basename(dir)}.tmp-`;
  const candidates = fs
    .readdirSync(parent)
    .filter((name) => name.startsWith(prefix) && fs.existsSync(path.join(parent, name, STATE_FILE)))
    .map((name) => path.join(parent, name))
    .map((d) => ({ d, epoch: readJson<LatestCheckpointFile>(path.join(d, STATE_FILE)).epoch }))
    .sort((a, b) => b.epoch - a.epoch);
  return candidates[0]?.d;
}

/** Reads `<runDir>/checkpoints/latest`; a clear error when the run has no completed epoch to resume from. */
export async function loadLatestCheckpoint(runDir: string): Promise<LoadedCheckpoint> {
  const dir = latestCheckpointDir(runDir);
  if (!dir) {
    throw new Error(
      `Cannot resume ${runDir}: no checkpoint at ${path.join(runDir, RUN_FILES.latest)}. The run has no completed epoch; start a new run instead.`,
    );
  }
  const state = readJson<LatestCheckpointFile>(path.join(dir, STATE_FILE));
  const model = await loadModel(dir);
  const optimizerState = readNamedTensors(dir, OPTIMIZER_BASENAME);
  return { model, optimizerState, state };
}

/**
 * Saves the best model (by `monitor`) to `<dir>/model` and, after every epoch, a resumable checkpoint with
 * optimizer state, learning rate, history and all callback counters to `<dir>/checkpoints/latest`.
 */
export function modelCheckpoint(opts: CheckpointOptions): CheckpointCallback {
  const monitor = opts.monitor ?? 'val_loss';
  const mode = resolveMode(monitor, opts.mode);
  const bestDir = path.join(opts.dir, RUN_FILES.model);
  const latestDir = path.join(opts.dir, RUN_FILES.latest);
  const s: CheckpointState = { best: null, bestEpoch: null };
  return {
    name: 'modelCheckpoint',
    get best() {
      return s.best;
    },
    get bestEpoch() {
      return s.bestEpoch;
    },
    bestDir,
    async onEpochEnd(epoch, logs, ctx) {
      const value = monitored(logs, monitor);
      if (isImprovement(value, s.best, mode)) {
        s.best = value;
        s.bestEpoch = epoch;
        await saveModel(ctx.model, bestDir);
      }
    },
    async afterEpoch(_epoch, _logs, ctx) {
      if (opts.saveLatest !== false) await saveLatestCheckpoint(latestDir, ctx);
    },
    getState: () => ({ ...s }),
    setState(state) {
      Object.assign(s, state as CheckpointState);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Early stopping

export interface EarlyStoppingOptions {
  monitor?: MonitorKey;
  mode?: MonitorMode;
  /** Epochs without improvement before stopping. */
  patience?: number;
  minDelta?: number;
  /** At the end of training, put back the weights of the best epoch (kept in memory). */
  restoreBestWeights?: boolean;
}

interface EarlyStoppingState {
  best: number | null;
  bestEpoch: number | null;
  wait: number;
  stoppedEpoch: number | null;
}

export interface EarlyStoppingCallback extends Callback {
  readonly stoppedEpoch: number | null;
  readonly bestEpoch: number | null;
}

export function earlyStopping(opts: EarlyStoppingOptions = {}): EarlyStoppingCallback {
  const monitor = opts.monitor ?? 'val_loss';
  const mode = resolveMode(monitor, opts.mode);
  const patience = opts.patience ?? 3;
  const minDelta = Math.abs(opts.minDelta ?? 0);
  const s: EarlyStoppingState = { best: null, bestEpoch: null, wait: 0, stoppedEpoch: null };
  let bestWeights: tf.Tensor[] | null = null;
  const dropBestWeights = () => {
    if (bestWeights) tf.dispose(bestWeights);
    bestWeights = null;
  };
  return {
    name: 'earlyStopping',
    get stoppedEpoch() {
      return s.stoppedEpoch;
    },
    get bestEpoch() {
      return s.bestEpoch;
    },
    onEpochEnd(epoch, logs, ctx) {
      const value = monitored(logs, monitor);
      if (isImprovement(value, s.best, mode, minDelta)) {
        s.best = value;
        s.bestEpoch = epoch;
        s.wait = 0;
        if (opts.restoreBestWeights) {
          dropBestWeights();
          bestWeights = ctx.model.getWeights().map((w) => w.clone());
        }
        return;
      }
      s.wait++;
      if (s.wait >= patience) {
        s.stoppedEpoch = epoch;
        ctx.stopTraining = true;
        ctx.stopReason = `early stopping: ${monitor} did not improve for ${patience} epoch(s) after epoch ${s.bestEpoch}`;
      }
    },
    onTrainEnd(ctx) {
      if (opts.restoreBestWeights && bestWeights && s.bestEpoch !== ctx.history[ctx.history.length - 1]?.epoch) {
        ctx.model.setWeights(bestWeights);
      }
      dropBestWeights();
    },
    getState: () => ({ ...s }),
    setState(state) {
      Object.assign(s, state as EarlyStoppingState);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Learning-rate schedule

export interface ReduceLROptions {
  monitor?: MonitorKey;
  mode?: MonitorMode;
  /** New LR = old LR * factor. */
  factor?: number;
  patience?: number;
  minDelta?: number;
  minLr?: number;
  /** Called with a message whenever the LR changes. */
  log?: (line: string) => void;
}

interface ReduceLRState {
  best: number | null;
  wait: number;
}

export function reduceLROnPlateau(opts: ReduceLROptions = {}): Callback {
  const monitor = opts.monitor ?? 'val_loss';
  const mode = resolveMode(monitor, opts.mode);
  const factor = opts.factor ?? 0.3;
  const patience = opts.patience ?? 2;
  const minDelta = Math.abs(opts.minDelta ?? 0);
  const minLr = opts.minLr ?? 1e-6;
  if (!(factor > 0 && factor < 1)) throw new Error(`reduceLROnPlateau: factor must be in (0, 1), got ${factor}.`);
  const s: ReduceLRState = { best: null, wait: 0 };
  return {
    name: 'reduceLROnPlateau',
    onEpochEnd(epoch, logs, ctx) {
      const value = monitored(logs, monitor);
      if (isImprovement(value, s.best, mode, minDelta)) {
        s.best = value;
        s.wait = 0;
        return;
      }
      s.wait++;
      if (s.wait >= patience) {
        const old = ctx.getLearningRate();
        const next = Math.max(old * factor, minLr);
        if (next < old) {
          ctx.setLearningRate(next);
          opts.log?.(
            `Epoch ${epoch}: ${monitor} plateaued for ${s.wait} epoch(s); learning rate ${old.toExponential(2)} -> ${next.toExponential(2)}`,
          );
        }
        s.wait = 0;
      }
    },
    getState: () => ({ ...s }),
    setState(state) {
      Object.assign(s, state as ReduceLRState);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// History files

export const HISTORY_COLUMNS: readonly (keyof EpochLogs)[] = ['epoch', 'loss', 'acc', 'val_loss', 'val_acc', 'val_auc', 'lr', 'seconds'];

/** Written only by runs that have an out-of-time validation split. */
export const VAL_TIME_COLUMNS: readonly (keyof EpochLogs)[] = ['val_time_loss', 'val_time_acc', 'val_time_auc'];

export function writeHistory(dir: string, history: readonly EpochLogs[]): void {
  writeJsonAtomic(path.join(dir, RUN_FILES.historyJson), history);
  const columns = history.some((h) => h.val_time_auc !== undefined)
    ? [...HISTORY_COLUMNS.slice(0, -2), ...VAL_TIME_COLUMNS, ...HISTORY_COLUMNS.slice(-2)]
    : HISTORY_COLUMNS;
  writeCsvAtomic(path.join(dir, RUN_FILES.historyCsv), history as unknown as Record<string, unknown>[], columns as string[]);
}

/** Writes history.json and history.csv into `dir` after every epoch (the whole history, resumed epochs included). */
export function historyWriter(opts: { dir: string }): Callback {
  return {
    onEpochEnd(_epoch, _logs, ctx) {
      writeHistory(opts.dir, ctx.history);
    },
  };
}

/** Keras's name for the history writer. */
export const history = historyWriter;

/** Calls `fn` at the end of every epoch: a one-line way to plot or log from a notebook. */
export function onEpochEnd(fn: (epoch: number, logs: EpochLogs, ctx: TrainContext) => void | Promise<void>): Callback {
  return { onEpochEnd: fn };
}
