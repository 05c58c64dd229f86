/** What a run is configured by: the settings, their defaults and the threshold-rule syntax of the CLI. */
import * as path from 'path';
import type * as tf from '@tensorflow/tfjs';
import type { BackendInfo } from '../accel';
import type { EvalResult } from '../evaluate';
import type { EpochLogs } from '../train/train';
import type { Callback } from '../train/callbacks';
import type { AveragingOutcome } from '../train/swa';
import type { ProgressOptions } from '../train/progress';
import { type ResizeFit } from '../data/decode';
import { type ModelVariant } from '../model';
import { type BackendName } from '../accel';
import { type ThresholdSplit } from '../evaluate';
import type { ThresholdRule } from '../evaluate/metrics';
import type { InputNormalization } from '../model/normalization';
import { DEFAULT_TRAIN, type TrainConfig } from '../train/train';
import { DEFAULT_RUNS_DIR } from '../runs/layout';

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
  // Exposure differs between devices and years; a per-image standardization removes brightness and contrast
  // before the first convolution (README "Generalization").
  normalize: 'standardize',
  monitor: 'val_loss',
  // Both validation splits together (random and out-of-time): twice the positives for the recall target.
  thresholdOn: 'pooled',
  tta: 1,
};

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
  /** With weight averaging: which epochs were averaged and whether the mean is the model. */
  averaging?: AveragingOutcome;
  stopReason?: string;
  interrupted: boolean;
  /** Absent when training was interrupted (nothing is evaluated then). */
  evaluation?: EvalResult;
  /** The best model; the caller owns it (dispose when done). */
  model?: tf.LayersModel;
}
