/**
 * Model evaluation with an honest threshold: the decision threshold is chosen on the validation split only
 * and applied unchanged to the test split, so test metrics never see their own labels.
 */
import * as tf from '@tensorflow/tfjs';
import {
  averagePrecision,
  applicableRule,
  chooseThreshold,
  classificationMetrics,
  ClassificationMetrics,
  Confusion,
  confusionAt,
  PrCurve,
  prCurve,
  rocAuc,
  RocCurve,
  rocCurve,
  ThresholdRule,
} from './metrics';
import { toTensor } from '../data/batches';
import { modelInputShape, repeatGray } from '../model/input';
import { applyAugmentParams, IDENTITY_PARAMS, type ImageAugmentParams } from '../augment';
import { DecodedImages, Label, LABELS, SplitName } from '../types';

export interface SplitMetrics extends ClassificationMetrics {
  confusion: Confusion;
  /** ROC AUC; NaN when the split holds one class only. */
  auc: number;
  /** sklearn-style average precision; NaN when the split has no positives. */
  averagePrecision: number;
  /** Note: roc.thresholds[0] is +Infinity, which JSON.stringify writes as null. */
  roc: RocCurve;
  pr: PrCurve;
  count: number;
}

/** Where a prediction's image came from: a split, or the out-of-time validation part. */
export type EvaluatedPart = SplitName | 'valTime';

export interface PredictionRow {
  split: EvaluatedPart;
  /** The image's path as recorded in `DecodedImages.records`. */
  file: string;
  patient: string;
  label: Label;
  /** Model probability of PNEUMONIA. */
  probability: number;
  predicted: Label;
  correct: boolean;
}

/** The validation split a threshold rule is applied to; `pooled`: every validation split the run has (val, and valTime if any). */
export type ThresholdSplit = 'val' | 'valTime' | 'pooled';
export const THRESHOLD_SPLITS: readonly ThresholdSplit[] = ['val', 'valTime', 'pooled'];
export const THRESHOLD_SPLIT_NAMES: Record<ThresholdSplit, string> = {
  val: 'validation split',
  valTime: 'out-of-time validation split',
  pooled: 'validation splits together',
};

export interface EvalResult {
  /** Chosen on validation with `thresholdRule`; predict PNEUMONIA when probability >= threshold. */
  threshold: number;
  thresholdRule: ThresholdRule;
  /** Where the threshold was chosen (absent: val). */
  thresholdOn?: ThresholdSplit;
  /** Why the rule applied differs from the one asked for (too few validation positives for a recall target). */
  thresholdNote?: string;
  /** Test-time augmentation views averaged (absent: 1). */
  tta?: number;
  /** Models whose probabilities were averaged (an ensemble; absent: 1). */
  models?: number;
  val: SplitMetrics;
  test: SplitMetrics;
  /** The out-of-time validation split at the same threshold, when the split has one. */
  valTime?: SplitMetrics;
  predictions: PredictionRow[];
}

/** The model's input channels, its side checked against the decoded images. */
function inputChannelsFor(model: tf.LayersModel, images: DecodedImages): number {
  const { height, width, channels } = modelInputShape(model);
  if (height !== images.size || width !== images.size) {
    throw new Error(
      `evaluate: the model expects ${height}x${width} images but they were decoded at ${images.size}x${images.size}; ` +
        'decode the images at the model input size',
    );
  }
  return channels;
}

/**
 * Images [start, end) as a float32 batch in [0, 1], shape [n, size, size, channels]; grayscale is repeated
 * across channels for RGB models. Caller disposes the result.
 */
function batchTensor(images: DecodedImages, start: number, end: number, channels: number): tf.Tensor4D {
  const rows = Array.from({ length: end - start }, (_, i) => start + i);
  return tf.tidy(() => repeatGray(toTensor(images, rows), channels));
}

function checkDecodedImages(images: DecodedImages): void {
  const n = images.records.length;
  if (images.labels.length !== n || images.pixels.length !== n * images.size * images.size) {
    throw new Error(
      `evaluate: inconsistent DecodedImages (${n} records, ${images.labels.length} labels, ` +
        `${images.pixels.length} pixels for size ${images.size}); decode the split again`,
    );
  }
}

/**
 * The fixed views test-time augmentation averages over, in order (`tta: n` uses the first n): the image, then
 * small zooms and shifts well inside the training augmentation's range, so every view is a film the model has
 * learnt to read. Shifts are fractions of the side.
 */
export const TTA_VIEWS: readonly Partial<ImageAugmentParams>[] = [
  {},
  { zoomX: 0.92, zoomY: 0.92 },
  { shiftX: -0.05 },
  { shiftX: 0.05 },
  { zoomX: 1.08, zoomY: 1.08 },
  { shiftY: -0.05 },
  { shiftY: 0.05 },
  { rotation: 5 },
];

/** One view of a batch; the caller disposes the result. */
function viewBatch(x: tf.Tensor4D, view: Partial<ImageAugmentParams>): tf.Tensor4D {
  const side = x.shape[1];
  const params: ImageAugmentParams = { ...IDENTITY_PARAMS, ...view, shiftX: (view.shiftX ?? 0) * side, shiftY: (view.shiftY ?? 0) * side };
  // Any geometric key routes applyAugmentParams through its warp; the values come from `params`.
  return applyAugmentParams(
    x,
    Array.from({ length: x.shape[0] }, () => params),
    { zoom: 0.1 },
  );
}

export function checkTta(tta: number): void {
  if (!(Number.isInteger(tta) && tta >= 1 && tta <= TTA_VIEWS.length)) {
    throw new Error(`test-time augmentation takes 1 to ${TTA_VIEWS.length} views (got ${tta}).`);
  }
}

/**
 * PNEUMONIA probability for every image, in record order. Runs the model in inference mode (dropout off,
 * batch-norm on moving statistics) batch by batch, so memory stays bounded on large splits. With `tta` > 1 the
 * probability is the mean over the first `tta` of TTA_VIEWS.
 */
export async function predictProbabilities(model: tf.LayersModel, images: DecodedImages, batchSize = 64, tta = 1): Promise<Float32Array> {
  checkDecodedImages(images);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`predictProbabilities: batchSize must be a positive integer, got ${batchSize}`);
  }
  checkTta(tta);
  const channels = inputChannelsFor(model, images);
  const n = images.records.length;
  const out = new Float32Array(n);
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const x = batchTensor(images, start, end, channels);
    for (let v = 0; v < tta; v++) {
      const input = v === 0 ? x : viewBatch(x, TTA_VIEWS[v]);
      const probs = tf.tidy(() => {
        const y = model.predict(input, { batchSize: end - start }) as tf.Tensor;
        if (y.size !== end - start) {
          throw new Error(`predictProbabilities: model output shape ${JSON.stringify(y.shape)} is not one probability per image`);
        }
        return y.reshape([end - start]);
      });
      const values = await probs.data();
      for (let i = 0; i < values.length; i++) out[start + i] += values[i] / tta;
      probs.dispose();
      if (input !== x) input.dispose();
    }
    x.dispose();
  }
  return out;
}

/** The mean probability of several models (an ensemble), each with the same test-time augmentation. */
export async function predictMean(
  models: readonly tf.LayersModel[],
  images: DecodedImages,
  batchSize = 64,
  tta = 1,
): Promise<Float32Array> {
  if (models.length === 0) throw new Error('predictMean: no models given');
  const mean = new Float32Array(images.records.length);
  for (const model of models) {
    const probs = await predictProbabilities(model, images, batchSize, tta);
    for (let i = 0; i < mean.length; i++) mean[i] += probs[i] / models.length;
  }
  return mean;
}

/** All metrics of one split at a fixed threshold. */
export function evaluateProbabilities(labels: ArrayLike<number>, probs: ArrayLike<number>, threshold: number): SplitMetrics {
  if (labels.length === 0) throw new Error('evaluateProbabilities: the split has no images to evaluate');
  const confusion = confusionAt(labels, probs, threshold);
  return {
    ...classificationMetrics(confusion),
    confusion,
    auc: rocAuc(labels, probs),
    averagePrecision: averagePrecision(labels, probs),
    roc: rocCurve(labels, probs),
    pr: prCurve(labels, probs),
    count: labels.length,
  };
}

function labelName(label: number): Label {
  return LABELS[label];
}

function predictionRows(split: EvaluatedPart, images: DecodedImages, probs: Float32Array, threshold: number): PredictionRow[] {
  return images.records.map((record, i) => {
    const label = labelName(images.labels[i]);
    const predicted = labelName(probs[i] >= threshold ? 1 : 0);
    return {
      split,
      file: record.path,
      patient: record.patient,
      label,
      probability: probs[i],
      predicted,
      correct: label === predicted,
    };
  });
}

/**
 * Predicts val and test, chooses the threshold on val ONLY (default: Youden's J) and applies it unchanged to test
 * (and to the out-of-time validation split, when given).
 */
export async function evaluate(
  model: tf.LayersModel | readonly tf.LayersModel[],
  data: { val: DecodedImages; test: DecodedImages; valTime?: DecodedImages },
  opts: { rule?: ThresholdRule; batchSize?: number; thresholdOn?: ThresholdSplit; tta?: number } = {},
): Promise<EvalResult> {
  const rule: ThresholdRule = opts.rule ?? { kind: 'youden' };
  const thresholdOn = opts.thresholdOn ?? 'val';
  const tta = opts.tta ?? 1;
  for (const split of ['val', 'test'] as const) {
    if (data[split].records.length === 0) {
      throw new Error(`evaluate: the ${split} split has no images; check the split and the decode skips`);
    }
  }
  if (thresholdOn === 'valTime' && !data.valTime?.records.length) {
    throw new Error(
      'evaluate: the threshold is to be chosen on the out-of-time validation split, but there is no out-of-time validation split (--val-time 0?)',
    );
  }
  const models = Array.isArray(model) ? model : [model as tf.LayersModel];
  const predict = (images: DecodedImages) => predictMean(models, images, opts.batchSize, tta);
  const valProbs = await predict(data.val);
  const testProbs = await predict(data.test);
  const valTimeProbs = data.valTime?.records.length ? await predict(data.valTime) : undefined;
  const chooser = thresholdSource(thresholdOn, data, valProbs, valTimeProbs);
  const applied = applicableRule(chooser.labels, rule);
  let threshold: number;
  try {
    threshold = chooseThreshold(chooser.labels, chooser.probs, applied.rule);
  } catch (err) {
    throw new Error(`evaluate: cannot choose the threshold on the ${THRESHOLD_SPLIT_NAMES[thresholdOn]}: ${(err as Error).message}`);
  }
  return {
    threshold,
    thresholdRule: applied.rule,
    ...(applied.note ? { thresholdNote: applied.note } : {}),
    ...(thresholdOn !== 'val' ? { thresholdOn } : {}),
    ...(tta > 1 ? { tta } : {}),
    ...(models.length > 1 ? { models: models.length } : {}),
    val: evaluateProbabilities(data.val.labels, valProbs, threshold),
    test: evaluateProbabilities(data.test.labels, testProbs, threshold),
    ...(valTimeProbs ? { valTime: evaluateProbabilities(data.valTime!.labels, valTimeProbs, threshold) } : {}),
    predictions: [
      ...predictionRows('val', data.val, valProbs, threshold),
      ...(valTimeProbs ? predictionRows('valTime', data.valTime!, valTimeProbs, threshold) : []),
      ...predictionRows('test', data.test, testProbs, threshold),
    ],
  };
}

/** The labels and probabilities a threshold rule sees. */
export function thresholdSource(
  on: ThresholdSplit,
  data: { val: Pick<DecodedImages, 'labels'>; valTime?: Pick<DecodedImages, 'labels'> },
  valProbs: Float32Array,
  valTimeProbs?: Float32Array,
): { labels: ArrayLike<number>; probs: ArrayLike<number> } {
  if (on === 'val' || !valTimeProbs || !data.valTime) return { labels: data.val.labels, probs: valProbs };
  if (on === 'valTime') return { labels: data.valTime.labels, probs: valTimeProbs };
  return { labels: [...data.val.labels, ...data.valTime.labels], probs: [...valProbs, ...valTimeProbs] };
}

const CSV_COLUMNS: Array<keyof PredictionRow> = ['split', 'file', 'patient', 'label', 'probability', 'predicted', 'correct'];

/** RFC 4180: quote fields holding a comma, quote or line break, doubling inner quotes. */
function csvField(value: string | number | boolean): string {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** One header line, then one line per row; probabilities at full precision so thresholds can be re-applied. */
export function predictionsToCsv(rows: PredictionRow[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const row of rows) lines.push(CSV_COLUMNS.map((column) => csvField(row[column])).join(','));
  return lines.join('\n') + '\n';
}

/**
 * The n wrong predictions the model was most sure of: ordered by distance between probability and the true
 * label (a NORMAL image at 0.99 before one at 0.6; a PNEUMONIA image at 0.01 before one at 0.4).
 * Ties keep split, then file order, so the list is deterministic.
 */
export function hardestMistakes(rows: PredictionRow[], n: number): PredictionRow[] {
  if (!Number.isInteger(n) || n < 0) throw new Error(`hardestMistakes: n must be a non-negative integer, got ${n}`);
  const error = (row: PredictionRow) => Math.abs((row.label === 'PNEUMONIA' ? 1 : 0) - row.probability);
  return rows
    .filter((row) => !row.correct)
    .sort((a, b) => error(b) - error(a) || a.split.localeCompare(b.split) || a.file.localeCompare(b.file))
    .slice(0, n);
}
