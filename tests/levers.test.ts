/**
 * The generalization levers (issue #12): per-image normalization, film-like augmentation, label smoothing, mixup,
 * test-time augmentation, where the threshold is chosen, and the exposure stress shifts. Each against a case worked
 * out by hand or an independent computation.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  applyFilmLike,
  augmentBatch,
  formatAugment,
  parseAugment,
  sampleAugmentParams,
  type ImageAugmentParams,
  IDENTITY_PARAMS,
} from '../src/augment';
import { checkTta, evaluate, predictProbabilities, thresholdSource, TTA_VIEWS } from '../src/evaluate';
import { buildModel } from '../src/model';
import { equalizeImages, parseInputNormalization, PerImageNormalization, standardizeImages } from '../src/model/normalization';
import { makeRng } from '../src/random';
import { exposureTable, shiftExposure } from '../src/evaluate/stress';
import { mixupBatch, sampleBeta, smoothLabels } from '../src/train/loss';
import { syntheticImages, tinyModel } from './train-fixtures';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

const PLAIN: ImageAugmentParams = { ...IDENTITY_PARAMS };

describe('per-image normalization', () => {
  it('standardize gives each image mean 0 and variance 1 (hand case) and floors the std of a flat image', () => {
    const x = tf.tensor4d([0, 0.5, 0.5, 1, 0.3, 0.3, 0.3, 0.3], [2, 2, 2, 1]);
    const y = Array.from(standardizeImages(x).dataSync());
    // Image 1: mean 0.5, std sqrt(0.125) = 0.354, below TF's floor 1/sqrt(4) = 0.5, so the divisor is 0.5.
    expect(y.slice(0, 4).map((v) => +v.toFixed(4))).toEqual([-1, 0, 0, 1]);
    const rng = makeRng(4);
    const big = standardizeImages(
      tf.tensor4d(
        Float32Array.from({ length: 400 }, () => 0.3 + 0.2 * rng()),
        [1, 20, 20, 1],
      ),
    ).dataSync();
    const mean = big.reduce((s, v) => s + v, 0) / big.length;
    expect(mean).toBeCloseTo(0, 5);
    expect(big.reduce((s, v) => s + (v - mean) ** 2, 0) / big.length).toBeCloseTo(1, 4);
    // Image 2 is flat: (x - mean) / max(0, 1/sqrt(4)) = 0, not NaN.
    expect(y.slice(4)).toEqual([0, 0, 0, 0]);
  });

  it('equalize maps each pixel to the share of pixels at or below its gray level, so any monotone curve gives the same image', () => {
    const x = tf.tensor4d([0, 0.5, 0.5, 1], [1, 2, 2, 1]);
    expect(Array.from(equalizeImages(x).dataSync())).toEqual([0.25, 0.75, 0.75, 1]);
    const rng = makeRng(3);
    const img = Float32Array.from({ length: 64 }, () => Math.round(rng() * 150) / 255);
    // Brighter and more contrasted, but still one gray level per gray level (no two merge).
    const curved = img.map((v) => (Math.round(v * 255 * 1.3) + 30) / 255);
    const a = equalizeImages(tf.tensor4d(img, [1, 8, 8, 1])).dataSync();
    const b = equalizeImages(tf.tensor4d(curved, [1, 8, 8, 1])).dataSync();
    expect(Array.from(b)).toEqual(Array.from(a));
  });

  it('the layer is saved and loaded with the model, and a brighter copy of an image scores the same', async () => {
    const model = buildModel({ variant: 'small', imageSize: 32, seed: 3, normalize: 'standardize' });
    expect(model.layers[1]).toBeInstanceOf(PerImageNormalization);
    const saved: tf.io.ModelArtifacts[] = [];
    await model.save(
      tf.io.withSaveHandler(async (a) => (saved.push(a), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })),
    );
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(saved[0]));
    const rng = makeRng(9);
    const img = tf.tensor4d(
      Float32Array.from({ length: 32 * 32 }, () => 0.2 + 0.5 * rng()),
      [1, 32, 32, 1],
    );
    const brighter = tf.add(img, 0.1);
    const p = (m: tf.LayersModel, x: tf.Tensor) => (m.predict(x) as tf.Tensor).dataSync()[0];
    expect(p(loaded, img)).toBeCloseTo(p(model, img), 6);
    expect(p(loaded, brighter)).toBeCloseTo(p(loaded, img), 5);
    expect(() => parseInputNormalization('clahe')).toThrow(/--normalize 'clahe' is not understood; use none, standardize, equalize/);
  });
});

describe('film-like augmentation (gamma, blur, noise)', () => {
  it('parses, formats and draws within range', () => {
    const cfg = parseAugment('gamma=0.3,blur=1,noise=0.02');
    expect(cfg).toEqual({ gamma: 0.3, blur: 1, noise: 0.02 });
    expect(formatAugment(cfg)).toBe('gamma=0.3,blur=1,noise=0.02');
    expect(() => parseAugment('gamma=1')).toThrow(/gamma=1 is out of range/);
    for (const p of sampleAugmentParams(cfg, makeRng(1), 200, 8, 8)) {
      expect(p.gamma).toBeGreaterThanOrEqual(0.7);
      expect(p.gamma).toBeLessThanOrEqual(1.3);
      expect(p.blurSigma).toBeLessThanOrEqual(1);
      expect(p.noiseStd).toBeLessThanOrEqual(0.02);
    }
  });

  it('gamma raises each pixel to the power; blur keeps a flat image and spreads a dot symmetrically; noise has the drawn std', () => {
    const v = Float32Array.from([0.25, 0.5, 1, 0]);
    applyFilmLike(v, 2, 2, [{ ...PLAIN, gamma: 2 }]);
    expect(Array.from(v)).toEqual([0.0625, 0.25, 1, 0]);

    const flat = new Float32Array(49).fill(0.4);
    applyFilmLike(flat, 7, 7, [{ ...PLAIN, blurSigma: 1.5 }]);
    for (const x of flat) expect(x).toBeCloseTo(0.4, 6);
    const dot = new Float32Array(49);
    dot[24] = 1;
    applyFilmLike(dot, 7, 7, [{ ...PLAIN, blurSigma: 1 }]);
    expect(dot[24]).toBeLessThan(0.3);
    expect(dot[23]).toBeCloseTo(dot[25], 6);
    expect(dot[17]).toBeCloseTo(dot[31], 6);
    expect(dot.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);

    const noisy = new Float32Array(100_000).fill(0.5);
    applyFilmLike(noisy, 250, 400, [{ ...PLAIN, noiseStd: 0.05, noiseSeed: 11 }]);
    const mean = noisy.reduce((s, x) => s + x, 0) / noisy.length;
    const std = Math.sqrt(noisy.reduce((s, x) => s + (x - mean) ** 2, 0) / noisy.length);
    expect(mean).toBeCloseTo(0.5, 2);
    expect(std).toBeGreaterThan(0.048);
    expect(std).toBeLessThan(0.052);
  });

  it('refuses colour batches rather than blurring across channels', () => {
    const x = tf.zeros([1, 4, 4, 3]) as tf.Tensor4D;
    expect(() => augmentBatch(x, { blur: 1 }, makeRng(1))).toThrow(/grayscale images only/);
  });
});

describe('label smoothing and mixup', () => {
  it('smoothLabels moves 0/1 to eps/2 and 1-eps/2', () => {
    expect(Array.from(smoothLabels(tf.tensor1d([0, 1]), 0.1).dataSync()).map((v) => +v.toFixed(6))).toEqual([0.05, 0.95]);
  });

  it('Beta(a, a) draws have mean 1/2 and variance 1/(4(2a+1))', () => {
    const rng = makeRng(5);
    const draws = Array.from({ length: 20_000 }, () => sampleBeta(0.4, rng));
    const mean = draws.reduce((s, x) => s + x, 0) / draws.length;
    const variance = draws.reduce((s, x) => s + (x - mean) ** 2, 0) / draws.length;
    expect(mean).toBeCloseTo(0.5, 1);
    expect(variance).toBeCloseTo(1 / (4 * 1.8), 2);
    expect(draws.every((x) => x > 0 && x < 1)).toBe(true);
  });

  it('mixupBatch blends images and labels with one lambda >= 1/2 and the same partner, reproducibly', () => {
    const xs = tf.tensor4d([0, 0, 1, 1, 2, 2, 3, 3], [4, 1, 2, 1]);
    const ys = tf.tensor1d([0, 1, 0, 1]);
    const a = mixupBatch(xs, ys, 0.4, makeRng(8));
    const b = mixupBatch(xs, ys, 0.4, makeRng(8));
    expect(a.lambda).toBeGreaterThanOrEqual(0.5);
    expect(Array.from(a.xs.dataSync())).toEqual(Array.from(b.xs.dataSync()));
    const mixed = a.xs.dataSync();
    const labels = a.ys.dataSync();
    for (let i = 0; i < 4; i++) {
      // Pixel value i of image i blends with partner j: value = lambda*i + (1-lambda)*j, label likewise.
      const j = (mixed[2 * i] - a.lambda * i) / (1 - a.lambda);
      expect(Math.abs(j - Math.round(j))).toBeLessThan(1e-4);
      expect(labels[i]).toBeCloseTo(a.lambda * (i % 2) + (1 - a.lambda) * (Math.round(j) % 2), 5);
    }
  });
});

describe('test-time augmentation and the threshold split', () => {
  it('tta 1 is the plain prediction; tta n is the mean of the first n views', async () => {
    const images = syntheticImages(6, 16, 2);
    const model = tinyModel(16, 4);
    const plain = await predictProbabilities(model, images);
    expect(Array.from(await predictProbabilities(model, images, 64, 1))).toEqual(Array.from(plain));
    const three = await predictProbabilities(model, images, 64, 3);
    expect(Array.from(three)).not.toEqual(Array.from(plain));
    // Views 2 and 3 by hand: the augment module's warp with the view's parameters.
    const x = tf.tensor4d(
      Float32Array.from(images.pixels, (v) => v / 255),
      [6, 16, 16, 1],
    );
    const { applyAugmentParams } = await import('../src/augment');
    const viewProbs = [1, 2].map((v) => {
      const view = TTA_VIEWS[v];
      const params = { ...PLAIN, ...view, shiftX: (view.shiftX ?? 0) * 16, shiftY: (view.shiftY ?? 0) * 16 };
      const warped = applyAugmentParams(x, Array(6).fill(params), { zoom: 0.1 });
      return (model.predict(warped) as tf.Tensor).dataSync();
    });
    for (let i = 0; i < 6; i++) expect(three[i]).toBeCloseTo((plain[i] + viewProbs[0][i] + viewProbs[1][i]) / 3, 5);
    expect(() => checkTta(0)).toThrow(/1 to 8 views/);
  });

  it('the threshold is chosen on val, valTime or both, and an ensemble averages its models', async () => {
    const val = syntheticImages(8, 16, 3);
    const valTime = syntheticImages(6, 16, 4);
    const pooled = thresholdSource('pooled', { val, valTime }, new Float32Array(8).fill(0.2), new Float32Array(6).fill(0.7));
    expect(pooled.labels.length).toBe(14);
    expect(
      Array.from(pooled.probs)
        .slice(6, 10)
        .map((v) => +v.toFixed(2)),
    ).toEqual([0.2, 0.2, 0.7, 0.7]);
    expect(thresholdSource('valTime', { val, valTime }, new Float32Array(8), new Float32Array(6)).labels).toBe(valTime.labels);

    const [m1, m2] = [tinyModel(16, 5), tinyModel(16, 6)];
    const test = syntheticImages(6, 16, 5);
    const one = await evaluate(m1, { val, test, valTime }, { rule: { kind: 'fixed', value: 0.5 } });
    const two = await evaluate(m2, { val, test, valTime }, { rule: { kind: 'fixed', value: 0.5 } });
    const both = await evaluate([m1, m2], { val, test, valTime }, { rule: { kind: 'fixed', value: 0.5 }, thresholdOn: 'pooled' });
    expect(both.models).toBe(2);
    expect(both.thresholdOn).toBe('pooled');
    const p = (ev: typeof one) => ev.predictions.filter((r) => r.split === 'test').map((r) => r.probability);
    p(both).forEach((v, i) => expect(v).toBeCloseTo((p(one)[i] + p(two)[i]) / 2, 6));
    await expect(evaluate(m1, { val, test }, { thresholdOn: 'valTime' })).rejects.toThrow(/no out-of-time validation split/);
  });
});

describe('exposure stress', () => {
  it('the lookup table applies gamma, contrast about mid-gray and the offset, clipped', () => {
    expect(exposureTable({ name: 'o', offset: 10 })[250]).toBe(255);
    expect(exposureTable({ name: 'o', offset: 10 })[100]).toBe(110);
    expect(exposureTable({ name: 'g', gamma: 0.5 })[64]).toBe(Math.round(255 * Math.sqrt(64 / 255)));
    expect(exposureTable({ name: 'c', contrast: 0.5 })[0]).toBe(64);
    const images = syntheticImages(2, 4, 1);
    const shifted = shiftExposure(images, { name: 'o', offset: -300 });
    expect(Array.from(shifted.pixels).every((v) => v === 0)).toBe(true);
    expect(images.pixels.some((v) => v > 0)).toBe(true);
  });
});

describe('a recall target needs enough validation positives', () => {
  it('asks 1/(1-target) of them, and below that applies Youden and says why', async () => {
    const { applicableRule, positivesNeededFor } = await import('../src/evaluate/metrics');
    expect(positivesNeededFor(0.98)).toBe(50);
    expect(positivesNeededFor(0.9)).toBe(10);
    const thirty = Uint8Array.from({ length: 60 }, (_, i) => (i < 30 ? 1 : 0));
    const fifty = Uint8Array.from({ length: 80 }, (_, i) => (i < 50 ? 1 : 0));
    const small = applicableRule(thirty, { kind: 'recall', target: 0.98 });
    expect(small.rule).toEqual({ kind: 'youden' });
    expect(small.note).toMatch(/needs at least 50 validation positives to be judged and there are 30/);
    expect(applicableRule(fifty, { kind: 'recall', target: 0.98 })).toEqual({ rule: { kind: 'recall', target: 0.98 } });
    expect(applicableRule(thirty, { kind: 'fixed', value: 0.5 })).toEqual({ rule: { kind: 'fixed', value: 0.5 } });
  });
});
