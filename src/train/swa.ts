/**
 * Stochastic weight averaging (Izmailov et al., 2018, "Averaging Weights Leads to Wider Optima and Better
 * Generalization"): the mean of the weights at the end of every epoch from `from` on, which the pipeline keeps
 * instead of the best epoch's weights when it validates at least as well (src/pipeline/steps.ts averagingJudge).
 * One epoch's weights sit wherever the last batches left them; their mean sits nearer the middle of the low-loss
 * region, which should suit films from another time and device, and it does not hang on which single epoch
 * validation happened to prefer. On our films it did not beat the best epoch (README "Generalization"), so it is
 * off by default.
 *
 * Batch-norm's moving statistics are not linear in the weights, so after averaging they are estimated again with
 * one pass over the training images (recomputeBatchNormStats), as torch.optim.swa_utils.update_bn does.
 *
 * The running mean is saved after every averaged epoch (`<dir>/after-epoch-<k>`), and the resumable checkpoint
 * records which epochs it holds, so an interrupted run resumes with the same average. The previous epoch's copy is
 * kept until the next one is written: the latest checkpoint may still point at it if the process dies in between.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { DecodedImages } from '../types';
import { epochBatches } from '../data/batches';
import { writeDirAtomic } from '../files';
import { readNamedTensors, writeNamedTensors } from '../runs/model-files';
import type { Callback, TrainConfig } from './types';
import { layersOf, warmupMomentum } from './step-layers';

const WEIGHTS_BASENAME = 'weights';

export interface WeightAveragingOptions {
  /** Folder for the running mean (one subfolder per averaged epoch, the last two kept). */
  dir: string;
  /** The first epoch (1-based) whose weights enter the mean. */
  from: number;
}

export interface WeightAveragingCallback extends Callback {
  /** The epochs in the mean so far. */
  readonly epochs: readonly number[];
  /** Puts the mean into `model`'s weights; false (model untouched) when no epoch has been averaged. */
  applyTo(model: tf.LayersModel): boolean;
  /** Frees the running mean (its files stay); call once the run no longer needs it. */
  dispose(): void;
}

interface AveragingState {
  epochs: number[];
}

function epochDir(dir: string, epoch: number): string {
  return path.join(dir, `after-epoch-${epoch}`);
}

/** What weight averaging did at the end of a run. */
export interface AveragingOutcome {
  /** The epochs in the mean. */
  epochs: number[];
  /** The validation loss the mean and the best epoch were compared on: the split that did not pick the best epoch
   * when the run has both (src/pipeline/steps.ts averagingJudge). */
  judgedOn: 'val_loss' | 'val_time_loss';
  /** The mean's, after its batch-norm statistics were re-estimated. */
  loss: number;
  /** The best single epoch's (null when no epoch had a finite one). */
  bestLoss: number | null;
  /** Whether the mean became the run's model (it must score at least as well as the best epoch). */
  kept: boolean;
}

/** `--swa-from`'s value (also a notebook parameter, which may arrive as text): a whole epoch, 'second-half' or 0. */
export function parseSwaFrom(value: string | number): number | 'second-half' {
  const text = String(value).trim();
  if (text === 'second-half') return 'second-half';
  if (!/^\d+$/.test(text)) throw new Error(`expected a whole epoch, 'second-half', or 0 for off (got ${JSON.stringify(value)}).`);
  return Number(text);
}

/**
 * The first averaged epoch of a training config (0 = no averaging). 'second-half' follows --epochs, so a short run
 * (a notebook's 3 epochs, the demo) averages its own second half instead of failing on an epoch it never reaches.
 */
export function swaStartEpoch(t: Pick<TrainConfig, 'epochs' | 'swaFrom'>): number {
  const from = t.swaFrom ?? 0;
  if (from === 'second-half') return Math.floor(t.epochs / 2) + 1;
  if (from > t.epochs) {
    throw new Error(`--swa-from ${from} starts after the last epoch (${t.epochs}); use 1 to ${t.epochs}, second-half, or 0 for off.`);
  }
  return from;
}

/** The mean of the model's weights (all of them, trainable or not) over the epochs from `opts.from` on. */
export function weightAveraging(opts: WeightAveragingOptions): WeightAveragingCallback {
  if (!(Number.isInteger(opts.from) && opts.from >= 1)) {
    throw new Error(`weight averaging must start at a whole epoch >= 1 (got ${opts.from}).`);
  }
  const s: AveragingState = { epochs: [] };
  let mean: tf.Tensor[] | undefined;

  const dispose = () => {
    tf.dispose(mean);
    mean = undefined;
  };

  return {
    name: 'weightAveraging',
    get epochs() {
      return s.epochs;
    },
    onTrainBegin(ctx) {
      dispose();
      const last = s.epochs[s.epochs.length - 1];
      if (last === undefined) return;
      // Resuming: the checkpoint says which epochs the mean holds; read that mean back.
      const dir = epochDir(opts.dir, last);
      if (!fs.existsSync(path.join(dir, `${WEIGHTS_BASENAME}.json`))) {
        throw new Error(
          `Cannot resume weight averaging: ${dir} is missing (the checkpoint says epochs ${s.epochs.join(', ')} were averaged). ` +
            'Start a new run, or resume with --swa-from 0 to keep the best epoch instead.',
        );
      }
      const saved = readNamedTensors(dir, WEIGHTS_BASENAME);
      const weights = ctx.model.weights;
      if (saved.length !== weights.length || saved.some((t, i) => !tf.util.arraysEqual(t.tensor.shape, weights[i].shape as number[]))) {
        tf.dispose(saved.map((t) => t.tensor));
        throw new Error(`Cannot resume weight averaging: ${dir} does not hold this model's weights.`);
      }
      mean = saved.map((t) => t.tensor);
    },
    async onEpochEnd(epoch, _logs, ctx) {
      if (epoch < opts.from || s.epochs.includes(epoch)) return;
      const n = s.epochs.length;
      const current = ctx.model.weights.map((w) => w.read());
      const next = tf.tidy(() => current.map((w, i) => (mean ? tf.add(mean[i], tf.div(tf.sub(w, mean[i]), n + 1)) : w.clone())));
      dispose();
      mean = next;
      s.epochs = [...s.epochs, epoch];
      const named = mean.map((tensor, i) => ({ name: `w${i}`, tensor }));
      await writeDirAtomic(epochDir(opts.dir, epoch), (tmp) => writeNamedTensors(tmp, WEIGHTS_BASENAME, named));
      // Keep this epoch's mean and the one before it (see the module comment); drop older ones.
      const keep = new Set(s.epochs.slice(-2).map((e) => path.basename(epochDir(opts.dir, e))));
      for (const name of fs.readdirSync(opts.dir)) {
        if (/^after-epoch-\d+$/.test(name) && !keep.has(name)) fs.rmSync(path.join(opts.dir, name), { recursive: true, force: true });
      }
    },
    applyTo(model) {
      if (!mean) return false;
      model.setWeights(mean);
      return true;
    },
    dispose,
    getState: () => ({ epochs: [...s.epochs] }),
    setState(state) {
      s.epochs = [...((state as AveragingState).epochs ?? [])];
    },
  };
}

/**
 * Re-estimates every batch-norm layer's moving mean and variance as the plain average over one pass of `images`
 * (no augmentation: the films inference sees), in training mode without gradients. Returns the batches used.
 */
export async function recomputeBatchNormStats(model: tf.LayersModel, images: DecodedImages, batchSize: number): Promise<number> {
  const norms = layersOf<{ momentum: number }>(model, 'BatchNormalization');
  if (!norms.length || !images.labels.length) return 0;
  const momenta = norms.map((l) => l.momentum);
  let step = 0;
  try {
    for (const batch of epochBatches(images, { batchSize, shuffle: false })) {
      // momentum t / (t + 1) on step t makes each moving statistic the running mean of the batches' statistics.
      norms.forEach((l) => (l.momentum = warmupMomentum(1, step)));
      tf.tidy(() => {
        model.apply(batch.xs, { training: true });
      });
      step++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    norms.forEach((l, i) => (l.momentum = momenta[i]));
  }
  return step;
}
