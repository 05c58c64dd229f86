/**
 * Model evaluation with an honest threshold: the decision threshold is chosen on the validation split only
 * and applied unchanged to the test split, so test metrics never see their own labels.
 */
import * as tf from '@tensorflow/tfjs';
import {
  averagePrecision,
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
import { toTensor } from './data/batches';
import { DecodedImages, Label, LABELS, SplitName } from './types';

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

export interface EvalResult {
  /** Chosen on val with `thresholdRule`; predict PNEUMONIA when probability >= threshold. */
  threshold: number;
  thresholdRule: ThresholdRule;
  val: SplitMetrics;
  test: SplitMetrics;
  /** The out-of-time validation split at the same threshold, when the split has one. */
  valTime?: SplitMetrics;
  predictions: PredictionRow[];
}

/** The [height, width, channels] the model wants, checked against the decoded images. */
function modelInputShape(model: tf.LayersModel, images: DecodedImages): { channels: number } {
  const shape = model.inputs[0]?.shape;
  if (!shape || shape.length !== 4) {
    throw new Error(`evaluate: model input shape ${JSON.stringify(shape)} is not [batch, height, width, channels]`);
  }
  const [, height, width, channels] = shape;
  if (height !== images.size || width !== images.size) {
    throw new Error(
      `evaluate: the model expects ${height}x${width} images but they were decoded at ${images.size}x${images.size}; ` +
        'decode the images at the model input size',
    );
  }
  if (channels !== 1 && channels !== 3) {
    throw new Error(`evaluate: model input has ${channels} channels; only 1 (grayscale) or 3 (RGB) are supported`);
  }
  return { channels };
}

/**
 * Images [start, end) as a float32 batch in [0, 1], shape [n, size, size, channels]; grayscale is repeated
 * across channels for RGB models. Caller disposes the result.
 */
function batchTensor(images: DecodedImages, start: number, end: number, channels: number): tf.Tensor4D {
  const rows = Array.from({ length: end - start }, (_, i) => start + i);
  return tf.tidy(() => {
    const gray = toTensor(images, rows);
    return channels === 1 ? gray : (tf.tile(gray, [1, 1, 1, channels]) as tf.Tensor4D);
  });
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
 * PNEUMONIA probability for every image, in record order. Runs the model in inference mode (dropout off,
 * batch-norm on moving statistics) batch by batch, so memory stays bounded on large splits.
 */
export async function predictProbabilities(model: tf.LayersModel, images: DecodedImages, batchSize = 64): Promise<Float32Array> {
  checkDecodedImages(images);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`predictProbabilities: batchSize must be a positive integer, got ${batchSize}`);
  }
  const { channels } = modelInputShape(model, images);
  const n = images.records.length;
  const out = new Float32Array(n);
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const probs = tf.tidy(() => {
      const x = batchTensor(images, start, end, channels);
      const y = model.predict(x, { batchSize: end - start }) as tf.Tensor;
      if (y.size !== end - start) {
        throw new Error(`predictProbabilities: model output shape ${JSON.stringify(y.shape)} is not one probability per image`);
      }
      return y.reshape([end - start]);
    });
    out.set(await probs.data(), start);
    probs.dispose();
  }
  return out;
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
  model: tf.LayersModel,
  data: { val: DecodedImages; test: DecodedImages; valTime?: DecodedImages },
  opts: { rule?: ThresholdRule; batchSize?: number } = {},
): Promise<EvalResult> {
  const rule: ThresholdRule = opts.rule ?? { kind: 'youden' };
  for (const split of ['val', 'test'] as const) {
    if (data[split].records.length === 0) {
      throw new Error(`evaluate: the ${split} split has no images; check the split and the decode skips`);
    }
  }
  const valProbs = await predictProbabilities(model, data.val, opts.batchSize);
  const testProbs = await predictProbabilities(model, data.test, opts.batchSize);
  let threshold: number;
  try {
    threshold = chooseThreshold(data.val.labels, valProbs, rule);
  } catch (err) {
    throw new Error(`evaluate: cannot choose the threshold on the validation split: ${(err as Error).message}`);
  }
  const valTimeProbs = data.valTime?.records.length ? await predictProbabilities(model, data.valTime, opts.batchSize) : undefined;
  return {
    threshold,
    thresholdRule: rule,
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
