/**
 * What tells one run from another: its hyperparameters, flattened to plain values, and the ones that differ from
 * the defaults. The same list names run folders, heads the comparison table and labels chart legends, so a person
 * reads one vocabulary everywhere.
 */
import { AUGMENT_PRESETS, formatAugment, type AugmentConfig } from '../augment';
import type { ThresholdRule } from '../evaluate/metrics';
import type { TrainConfig } from '../train/train';

/** The part of a run's settings that makes it a different experiment (PipelineConfig satisfies it). */
export interface HyperparameterSource {
  variant: string;
  imageSize: number;
  train: TrainConfig;
  threshold: ThresholdRule;
  patience: number;
  limit?: number;
  split: { seed: number; valFraction: number };
  normalize?: string;
  monitor?: string;
  thresholdOn?: string;
  tta?: number;
}

export type Hyperparameters = Record<HyperparameterName, string | number>;

export const HYPERPARAMETER_NAMES = [
  'model',
  'imageSize',
  'epochs',
  'batchSize',
  'lr',
  'augment',
  'classWeights',
  'balance',
  'seed',
  'limit',
  'threshold',
  'patience',
  'valFraction',
  'splitSeed',
  'normalize',
  'labelSmoothing',
  'mixup',
  'swaFrom',
  'tta',
  'monitor',
  'thresholdOn',
] as const;
export type HyperparameterName = (typeof HYPERPARAMETER_NAMES)[number];

export function formatThresholdRule(rule: ThresholdRule): string {
  if (rule.kind === 'youden') return 'youden';
  if (rule.kind === 'recall') return `recall=${rule.target}`;
  return `fixed=${rule.value}`;
}

/** A preset's name when the config is one ('default', 'seed', 'none'), else the spec. */
export function augmentName(cfg: AugmentConfig): string {
  const spec = formatAugment(cfg);
  for (const [name, preset] of Object.entries(AUGMENT_PRESETS)) if (formatAugment(preset) === spec) return name;
  return spec;
}

export function hyperparameters(cfg: HyperparameterSource): Hyperparameters {
  const t = cfg.train;
  return {
    model: cfg.variant,
    imageSize: cfg.imageSize,
    epochs: t.epochs,
    batchSize: t.batchSize,
    lr: t.learningRate,
    augment: augmentName(t.augment),
    classWeights: t.classWeights,
    balance: t.balance ?? 'none',
    seed: t.seed,
    limit: cfg.limit ?? 'all',
    threshold: formatThresholdRule(cfg.threshold),
    patience: cfg.patience,
    valFraction: cfg.split.valFraction,
    // Runs written before a setting existed read as its default, so they compare as the same experiment.
    splitSeed: cfg.split.seed === t.seed ? 'seed' : cfg.split.seed,
    normalize: cfg.normalize ?? 'none',
    labelSmoothing: t.labelSmoothing ?? 0,
    mixup: t.mixup ?? 0,
    swaFrom: t.swaFrom ?? 0,
    tta: cfg.tta ?? 1,
    monitor: cfg.monitor ?? 'val_loss',
    thresholdOn: cfg.thresholdOn ?? 'val',
  };
}

/** Names of the hyperparameters whose values differ between `cfg` and `defaults`, in HYPERPARAMETER_NAMES order. */
export function changedHyperparameters(cfg: HyperparameterSource, defaults: HyperparameterSource): HyperparameterName[] {
  const a = hyperparameters(cfg);
  const b = hyperparameters(defaults);
  return HYPERPARAMETER_NAMES.filter((k) => a[k] !== b[k]);
}

/** Short forms for folder names: `lr3e-4`, `64px`, `e2`; the model name and presets stand alone. */
function shortForm(name: HyperparameterName, value: string | number): string {
  switch (name) {
    case 'model':
      return String(value);
    case 'imageSize':
      return `${value}px`;
    case 'epochs':
      return `e${value}`;
    case 'batchSize':
      return `b${value}`;
    case 'lr':
      return `lr${Number(value)
        .toExponential()
        .replace(/\.?0*e\+?/, 'e')}`;
    case 'augment':
      return `aug-${value}`;
    case 'classWeights':
      return `cw-${value}`;
    case 'limit':
      return `limit${value}`;
    case 'seed':
      return `seed${value}`;
    case 'valFraction':
      return `val${value}`;
    case 'splitSeed':
      return `split${value}`;
    case 'normalize':
      return `norm-${value}`;
    case 'labelSmoothing':
      return `ls${value}`;
    case 'monitor':
      return value === 'val_time_loss' ? 'sel-valtime' : 'sel-val';
    case 'thresholdOn':
      return `thr-on-${value}`;
    default:
      return `${name}-${value}`.replace(/=/g, '');
  }
}

/**
 * The folder label of a run: `--name` when given, else the hyperparameters that differ from the defaults
 * (`small-64px-e2-lr3e-4`), else `defaults`. The timestamp in front (createRunDir) makes it unique.
 */
export function runLabel(cfg: HyperparameterSource & { name?: string }, defaults: HyperparameterSource): string {
  if (cfg.name && cfg.name.trim()) return cfg.name.trim();
  const values = hyperparameters(cfg);
  const changed = changedHyperparameters(cfg, defaults);
  return changed.length ? changed.map((k) => shortForm(k, values[k])).join('-') : 'defaults';
}
