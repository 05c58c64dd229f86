import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluate, evaluateProbabilities, hardestMistakes, predictionsToCsv, predictProbabilities, PredictionRow } from '../src/evaluate';
import { confusionAt } from '../src/evaluate/metrics';
import { DecodedImages, LABELS } from '../src/types';

const SIZE = 8;

/** Uniform-brightness images: the tiny model's probability is a known function of brightness. */
function fakeImages(split: 'val' | 'test', brightness: number[], labels: number[]): DecodedImages {
  const pixels = new Uint8Array(brightness.length * SIZE * SIZE);
  brightness.forEach((b, i) => pixels.fill(b, i * SIZE * SIZE, (i + 1) * SIZE * SIZE));
  return {
    records: brightness.map((b, i) => ({
      path: `/data/${split}/${LABELS[labels[i]]}/img_${b}.jpeg`,
      label: LABELS[labels[i]],
      patient: `${split}-p${i}`,
      source: split,
    })),
    size: SIZE,
    pixels,
    labels: Uint8Array.from(labels),
    skipped: [],
  };
}

/** Dense model with logit = 4 * mean(pixel / 255) - 2, so probability rises with brightness. */
function tinyModel(channels = 1): tf.LayersModel {
  const input = tf.input({ shape: [SIZE, SIZE, channels] });
  const flat = tf.layers.flatten().apply(input) as tf.SymbolicTensor;
  const dropped = tf.layers.dropout({ rate: 0.9 }).apply(flat) as tf.SymbolicTensor;
  const dense = tf.layers.dense({ units: 1, activation: 'sigmoid' });
  const output = dense.apply(dropped) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  const inputs = SIZE * SIZE * channels;
  tf.tidy(() => dense.setWeights([tf.fill([inputs, 1], 4 / inputs), tf.tensor1d([-2])]));
  return model;
}

const expectedProbability = (brightness: number) => 1 / (1 + Math.exp(-(4 * (brightness / 255) - 2)));

// Youden on val: J(>=p210)=1/3, J(>=p170)=2/3, J(>=p130)=1/3, J(>=p90)=2/3 -> tie, higher threshold p170.
const VAL_BRIGHTNESS = [10, 50, 90, 130, 170, 210];
const VAL_LABELS = [0, 0, 1, 0, 1, 1];
// On test alone Youden would pick p160 (J = 3/4); with the val threshold p170 the confusion is tp2 fp1 tn1 fn2.
const TEST_BRIGHTNESS = [20, 100, 160, 180, 200, 240];
const TEST_LABELS = [0, 1, 1, 0, 1, 1];

beforeAll(async () => {
  await tf.ready();
});

describe('predictProbabilities', () => {
  it('returns one probability per image in order, independent of the batch size, in inference mode', async () => {
    const model = tinyModel();
    const images = fakeImages('val', VAL_BRIGHTNESS, VAL_LABELS);
    const before = tf.memory().numTensors;
    const all = await predictProbabilities(model, images);
    const batched = await predictProbabilities(model, images, 4);
    expect(tf.memory().numTensors).toBe(before);
    expect(all).toBeInstanceOf(Float32Array);
    expect(Array.from(batched)).toEqual(Array.from(all));
    // Dropout(0.9) would scramble these if it ran in training mode.
    VAL_BRIGHTNESS.forEach((b, i) => expect(all[i]).toBeCloseTo(expectedProbability(b), 5));
    model.dispose();
  });

  it('repeats grayscale into three channels for an RGB model', async () => {
    const model = tinyModel(3);
    const probs = await predictProbabilities(model, fakeImages('val', [0, 255], [0, 1]), 1);
    expect(probs[0]).toBeCloseTo(expectedProbability(0), 5);
    expect(probs[1]).toBeCloseTo(expectedProbability(255), 5);
    model.dispose();
  });

  it('rejects images decoded at another size than the model input', async () => {
    const model = tinyModel();
    const images = { ...fakeImages('val', [1], [0]), size: 4, pixels: new Uint8Array(16) };
    await expect(predictProbabilities(model, images)).rejects.toThrow(/expects 8x8 images but they were decoded at 4x4/);
    model.dispose();
  });
});

describe('evaluateProbabilities', () => {
  it('bundles confusion, rates, AUC, AP and curves at the given threshold', () => {
    const m = evaluateProbabilities([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.35);
    expect(m.confusion).toEqual({ tp: 2, fp: 1, tn: 1, fn: 0 });
    expect(m.accuracy).toBeCloseTo(0.75, 12);
    expect(m.precision).toBeCloseTo(2 / 3, 12);
    expect(m.recall).toBe(1);
    expect(m.specificity).toBe(0.5);
    expect(m.auc).toBeCloseTo(0.75, 12);
    expect(m.averagePrecision).toBeCloseTo(5 / 6, 12);
    expect(m.roc.thresholds[0]).toBe(Infinity);
    expect(m.pr.thresholds).toEqual([0.1, 0.35, 0.4, 0.8]);
    expect(m.count).toBe(4);
    expect(() => evaluateProbabilities([], [], 0.5)).toThrow(/no images/);
  });
});

describe('evaluate', () => {
  it('chooses the threshold on val only and applies it unchanged to test', async () => {
    const model = tinyModel();
    const val = fakeImages('val', VAL_BRIGHTNESS, VAL_LABELS);
    const test = fakeImages('test', TEST_BRIGHTNESS, TEST_LABELS);
    const before = tf.memory().numTensors;
    const result = await evaluate(model, { val, test }, { batchSize: 5 });
    expect(tf.memory().numTensors).toBe(before);

    const valProbs = await predictProbabilities(model, val);
    const testProbs = await predictProbabilities(model, test);
    expect(result.thresholdRule).toEqual({ kind: 'youden' });
    expect(result.threshold).toBe(valProbs[4]); // the brightness-170 val image
    expect(result.threshold).toBeCloseTo(expectedProbability(170), 5);

    expect(result.val.confusion).toEqual({ tp: 2, fp: 0, tn: 3, fn: 1 });
    expect(result.test.confusion).toEqual({ tp: 2, fp: 1, tn: 1, fn: 2 });
    expect(result.test.confusion).toEqual(confusionAt(TEST_LABELS, testProbs, valProbs[4]));
    expect(result.test.recall).toBe(0.5);
    expect(result.test.auc).toBe(0.75); // 6 of 8 positive/negative pairs ordered correctly
    expect(result.val.count).toBe(6);
    expect(result.test.count).toBe(6);
  });

  it('writes complete prediction rows for both splits', async () => {
    const model = tinyModel();
    const val = fakeImages('val', VAL_BRIGHTNESS, VAL_LABELS);
    const test = fakeImages('test', TEST_BRIGHTNESS, TEST_LABELS);
    const result = await evaluate(model, { val, test });
    const rows = result.predictions;
    expect(rows.map((r) => r.split)).toEqual([...Array(6).fill('val'), ...Array(6).fill('test')]);
    expect(rows.map((r) => r.file)).toEqual([...val.records, ...test.records].map((r) => r.path));
    expect(rows.map((r) => r.patient)).toEqual([...val.records, ...test.records].map((r) => r.patient));
    expect(rows.map((r) => r.label)).toEqual([...VAL_LABELS, ...TEST_LABELS].map((l) => LABELS[l]));
    for (const row of rows) {
      expect(row.predicted).toBe(row.probability >= result.threshold ? 'PNEUMONIA' : 'NORMAL');
      expect(row.correct).toBe(row.predicted === row.label);
      expect(Number.isFinite(row.probability)).toBe(true);
    }
    expect(rows.filter((r) => r.split === 'test' && !r.correct)).toHaveLength(3);
  });

  it('uses the recall rule on val and fails clearly when val has one class', async () => {
    const model = tinyModel();
    const val = fakeImages('val', VAL_BRIGHTNESS, VAL_LABELS);
    const test = fakeImages('test', TEST_BRIGHTNESS, TEST_LABELS);
    const result = await evaluate(model, { val, test }, { rule: { kind: 'recall', target: 1 } });
    expect(result.threshold).toBeCloseTo(expectedProbability(90), 5);
    expect(result.val.recall).toBe(1);
    const oneClass = fakeImages('val', [10, 20], [1, 1]);
    await expect(evaluate(model, { val: oneClass, test })).rejects.toThrow(/validation split.*2 positives and 0 negatives/);
    await expect(evaluate(model, { val, test: fakeImages('test', [], []) })).rejects.toThrow(/test split has no images/);
  });
});

function row(overrides: Partial<PredictionRow>): PredictionRow {
  return {
    split: 'test',
    file: 'a.jpeg',
    patient: 'p1',
    label: 'NORMAL',
    probability: 0.1,
    predicted: 'NORMAL',
    correct: true,
    ...overrides,
  };
}

describe('predictionsToCsv', () => {
  it('writes a header and quotes fields with commas, quotes and line breaks', () => {
    const csv = predictionsToCsv([
      row({ file: '/x/plain.jpeg', probability: 0.25 }),
      row({ file: '/x/a,b "c".jpeg', patient: 'line\nbreak', label: 'PNEUMONIA', predicted: 'NORMAL', correct: false }),
    ]);
    expect(csv).toBe(
      'split,file,patient,label,probability,predicted,correct\n' +
        'test,/x/plain.jpeg,p1,NORMAL,0.25,NORMAL,true\n' +
        'test,"/x/a,b ""c"".jpeg","line\nbreak",PNEUMONIA,0.1,NORMAL,false\n',
    );
    expect(predictionsToCsv([])).toBe('split,file,patient,label,probability,predicted,correct\n');
  });
});

describe('hardestMistakes', () => {
  it('returns wrong predictions, most confidently wrong first', () => {
    const rows = [
      row({ file: 'ok.jpeg' }),
      row({ file: 'fp-mild.jpeg', probability: 0.6, predicted: 'PNEUMONIA', correct: false }),
      row({ file: 'fn-bad.jpeg', label: 'PNEUMONIA', probability: 0.02, correct: false }),
      row({ file: 'fp-bad.jpeg', probability: 0.97, predicted: 'PNEUMONIA', correct: false }),
      row({ file: 'fn-mild.jpeg', label: 'PNEUMONIA', probability: 0.45, correct: false }),
    ];
    expect(hardestMistakes(rows, 10).map((r) => r.file)).toEqual(['fn-bad.jpeg', 'fp-bad.jpeg', 'fp-mild.jpeg', 'fn-mild.jpeg']);
    expect(hardestMistakes(rows, 2).map((r) => r.file)).toEqual(['fn-bad.jpeg', 'fp-bad.jpeg']);
    expect(hardestMistakes(rows, 0)).toEqual([]);
    expect(() => hardestMistakes(rows, -1)).toThrow(/non-negative/);
  });
});
