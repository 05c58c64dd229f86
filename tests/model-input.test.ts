import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { predictProbabilities } from '../src/evaluate';
import { imageInput, modelInputShape, modelInputSize, predictImage } from '../src/model/input';
import type { DecodedImages } from '../src/types';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** A tiny sigmoid model whose output depends on every pixel and channel differently. */
function tinyModel(size: number, channels: number): tf.LayersModel {
  const model = tf.sequential({
    layers: [
      tf.layers.flatten({ inputShape: [size, size, channels] }),
      tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: 'randomNormal', biasInitializer: 'zeros' }),
    ],
  });
  const n = size * size * channels;
  model.layers[1].setWeights([
    tf.tensor2d(
      Array.from({ length: n }, (_, i) => ((i % 7) - 3) / n),
      [n, 1],
    ),
    tf.tensor1d([0.1]),
  ]);
  return model;
}

const pixels = (size: number) => Uint8Array.from({ length: size * size }, (_, i) => (i * 37) % 256);

describe('imageInput', () => {
  it('scales grey levels to [0, 1] in a [1, size, size, 1] batch', () => {
    const model = tinyModel(4, 1);
    const x = imageInput(model, pixels(4));
    expect(x.shape).toEqual([1, 4, 4, 1]);
    const values = x.dataSync();
    expect(values[1]).toBeCloseTo(37 / 255, 6);
    expect(values[15]).toBeCloseTo(((15 * 37) % 256) / 255, 6);
    x.dispose();
  });

  it('repeats the grey channel for an RGB model', () => {
    const x = imageInput(tinyModel(4, 3), pixels(4));
    expect(x.shape).toEqual([1, 4, 4, 3]);
    const v = x.dataSync();
    for (let p = 0; p < 16; p++) expect([v[p * 3 + 1], v[p * 3 + 2]]).toEqual([v[p * 3], v[p * 3]]);
    x.dispose();
  });

  it('names what is wrong with the image or the model', () => {
    expect(() => imageInput(tinyModel(4, 1), pixels(3), 3)).toThrow(/expects 4x4 images but got 3x3; resize the image first/);
    expect(() => imageInput(tinyModel(4, 1), pixels(3))).toThrow(/has 9 pixels, expected 4x4 = 16 grayscale values/);
    expect(() => modelInputShape(tinyModel(4, 2))).toThrow(/2 channels; only 1 \(grayscale\) or 3 \(RGB\)/);
    const flat = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [5] })] });
    expect(() => modelInputSize(flat)).toThrow(/is not one \[batch, height, width, channels\] image input/);
  });
});

describe('predictImage', () => {
  it('gives one image the probability evaluation gives it in a batch, for grey and RGB models', async () => {
    for (const channels of [1, 3]) {
      const model = tinyModel(4, channels);
      const a = pixels(4);
      const b = Uint8Array.from(a, (v) => 255 - v);
      const images: DecodedImages = {
        size: 4,
        pixels: Uint8Array.from([...a, ...b]),
        labels: Uint8Array.from([0, 1]),
        records: [
          { path: 'a.jpeg', label: 'NORMAL', patient: 'a', source: 'train' },
          { path: 'b.jpeg', label: 'PNEUMONIA', patient: 'b', source: 'train' },
        ],
        skipped: [],
      };
      const batch = await predictProbabilities(model, images);
      expect(predictImage(model, a)).toBeCloseTo(batch[0], 6);
      expect(predictImage(model, b)).toBeCloseTo(batch[1], 6);
      // The two films must differ, or the comparison says nothing.
      expect(Math.abs(batch[0] - batch[1])).toBeGreaterThan(0.01);
    }
  });
});
