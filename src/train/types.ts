/**
 * The training loop's vocabulary: its configuration, what each epoch and batch reports, what callbacks see, and the
 * state a resume restores. Its own module so the loop (train.ts) and the callbacks (callbacks.ts) both depend on it
 * and not on each other.
 */
import type * as tf from '@tensorflow/tfjs';
import type { AugmentConfig } from '../augment';
import { DEFAULT_AUGMENT } from '../augment';

export interface TrainConfig {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** 'balanced' weighs each sample by n / (2 * n_class), like sklearn's compute_class_weight('balanced'). */
  classWeights: 'balanced' | 'none';
  augment: AugmentConfig;
  /** 'oversample' repeats minority-class images within each epoch (done by the batch generator). */
  balance?: 'none' | 'oversample';
  /** Seeds shuffling, augmentation and dropout masks; each epoch (and step) derives its own stream from it. */
  seed: number;
  /** Targets move from 0/1 to eps/2 and 1-eps/2, so the model is not pushed to certainty on training films. */
  labelSmoothing?: number;
  /** mixup's Beta(alpha, alpha): each batch is blended with a shuffled copy of itself; 0 or absent = off. */
  mixup?: number;
  /** Stochastic weight averaging: the run keeps the mean of the weights of every epoch from this one on (1-based);
   * 'second-half' = from epoch floor(epochs / 2) + 1; 0 or absent = off, keep the best epoch (src/train/swa.ts). */
  swaFrom?: number | 'second-half';
}

export const DEFAULT_TRAIN: TrainConfig = Object.freeze({
  epochs: 10,
  batchSize: 32,
  learningRate: 1e-3,
  // Balanced weights pushed the recall-98% threshold down (0.18-0.33) and with it specificity on held-out films;
  // without them, over three seeds, out-of-time specificity rose from 92.0 +- 4.6 to 94.5 +- 2.7 (README "Generalization").
  classWeights: 'none',
  augment: DEFAULT_AUGMENT,
  balance: 'none',
  seed: 42,
  labelSmoothing: 0,
  mixup: 0,
  // Off: judged on the out-of-time split, the mean of epochs 6-10 lost to the best epoch on all three seeds measured
  // (log loss 0.080 / 0.073 / 0.071 against 0.062 / 0.067 / 0.068; README "Generalization"), so it only cost time.
  swaFrom: 0,
}) as TrainConfig;

/** One row of the training history. Epochs are 1-based, as printed. */
export interface EpochLogs {
  epoch: number;
  loss: number;
  acc: number;
  val_loss: number;
  val_acc: number;
  val_auc: number;
  /** The same on the out-of-time validation split, when training was given one (read, never used to select). */
  val_time_loss?: number;
  val_time_acc?: number;
  val_time_auc?: number;
  /** Learning rate used during this epoch. */
  lr: number;
  seconds: number;
}

/** Where one epoch's wall time went, in seconds (train()'s onEpochTiming; `npm run bench:train` prints it). */
export interface EpochTiming {
  /** Building batches: gathering rows, scaling, augmenting. */
  batches: number;
  /** Training steps, up to reading each batch's loss back. */
  steps: number;
  /** Batch-end callbacks (progress) and yielding to the event loop. */
  callbacks: number;
  /** Predicting the validation split(s) and computing their metrics. */
  validation: number;
}

export interface BatchLogs {
  /** 0-based index within the epoch. */
  batch: number;
  size: number;
  loss: number;
}

/** What callbacks see and may change. */
export interface TrainContext {
  model: tf.LayersModel;
  optimizer: tf.AdamOptimizer;
  config: TrainConfig;
  /** Set by a callback (early stopping) to end training after the current epoch. */
  stopTraining: boolean;
  stopReason?: string;
  /** True once Ctrl-C / abort was requested; the current epoch is abandoned, not recorded. */
  interrupted: boolean;
  /** Epochs completed before this call (non-zero when resuming). */
  initialEpoch: number;
  batchesPerEpoch: number;
  trainCount: number;
  valCount: number;
  /** Every completed epoch, including those from before a resume. */
  history: EpochLogs[];
  callbacks: readonly Callback[];
  getLearningRate(): number;
  setLearningRate(lr: number): void;
}

/** Saved state that lets `train` continue exactly where a previous call stopped. */
export interface ResumeState {
  /** Completed epochs. */
  epoch: number;
  history: EpochLogs[];
  learningRate: number;
  /** Callback state by callback name (early-stopping counters, best values...). */
  callbackStates: Record<string, unknown>;
}

export interface Callback {
  /** Key for this callback's saved state; required when it has state to persist. */
  name?: string;
  onTrainBegin?(ctx: TrainContext): void | Promise<void>;
  onEpochBegin?(epoch: number, ctx: TrainContext): void | Promise<void>;
  onBatchEnd?(batch: number, logs: BatchLogs, ctx: TrainContext): void | Promise<void>;
  onEpochEnd?(epoch: number, logs: EpochLogs, ctx: TrainContext): void | Promise<void>;
  /** Runs after every callback's onEpochEnd (checkpoints use it to capture final per-epoch state). */
  afterEpoch?(epoch: number, logs: EpochLogs, ctx: TrainContext): void | Promise<void>;
  onTrainEnd?(ctx: TrainContext): void | Promise<void>;
  getState?(): unknown;
  setState?(state: unknown): void;
}
