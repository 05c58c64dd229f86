import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { gradCam, gradCamOverlayPng, jet } from '../src/evaluate/gradcam';
import { buildModel } from '../src/model';
import { makeRng } from '../src/random';

beforeAll(async () => {
  await tf.ready();
});

function randomImage(size: number, seed: number): Uint8Array {
  const rng = makeRng(seed);
  return Uint8Array.from({ length: size * size }, () => Math.floor(rng() * 256));
}

function predict(model: tf.LayersModel, image: Uint8Array, size: number): number {
  return tf.tidy(() => {
    const x = tf.tensor4d(
      Float32Array.from(image, (v) => v / 255),
      [1, size, size, 1],
    );
    return (model.predict(x) as tf.Tensor).dataSync()[0];
  });
}

/** Fraction of the heatmap's total mass inside rows [r0, r1) x cols [c0, c1). */
function massIn(heatmap: Float32Array, size: number, r0: number, r1: number, c0: number, c1: number): number {
  let inside = 0;
  let total = 0;
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) {
      const v = heatmap[r * size + c];
      total += v;
      if (r >= r0 && r < r1 && c >= c0 && c < c1) inside += v;
    }
  }
  return inside / total;
}

describe('gradCam against a hand computation', () => {
  const SIZE = 8;
  const CHANNELS = 3;

  /** conv(same, relu) -> flatten -> dense(sigmoid): d logit / dA[i,j,k] is the dense weight W[i,j,k]. */
  function convDenseModel(denseScale: number) {
    const input = tf.input({ shape: [SIZE, SIZE, 1] });
    const conv = tf.layers.conv2d({
      name: 'feat',
      filters: CHANNELS,
      kernelSize: 3,
      padding: 'same',
      activation: 'relu',
      kernelInitializer: tf.initializers.randomNormal({ seed: 3 }),
      biasInitializer: tf.initializers.constant({ value: 0.05 }),
    });
    const features = conv.apply(input) as tf.SymbolicTensor;
    const flat = tf.layers.flatten().apply(features) as tf.SymbolicTensor;
    const dense = tf.layers.dense({ name: 'out', units: 1, activation: 'sigmoid' });
    const output = dense.apply(flat) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: output });
    const rng = makeRng(11);
    // Channel means of opposite signs, so the sign of the channel weights matters.
    const channelBias = [0.3, -0.3, 0.1];
    const weights = Float32Array.from({ length: SIZE * SIZE * CHANNELS }, (_, i) => (rng() - 0.5 + channelBias[i % CHANNELS]) * denseScale);
    tf.tidy(() => dense.setWeights([tf.tensor2d(weights, [SIZE * SIZE * CHANNELS, 1]), tf.tensor1d([0.1])]));
    const featureModel = tf.model({ inputs: input, outputs: features });
    return { model, featureModel, weights };
  }

  function reference(featureModel: tf.LayersModel, weights: Float32Array, image: Uint8Array): number[] {
    const activations = tf.tidy(() =>
      (
        featureModel.predict(
          tf.tensor4d(
            Float32Array.from(image, (v) => v / 255),
            [1, SIZE, SIZE, 1],
          ),
        ) as tf.Tensor
      ).dataSync(),
    );
    const channelWeights = Array.from({ length: CHANNELS }, (_, k) => {
      let sum = 0;
      for (let p = 0; p < SIZE * SIZE; p++) sum += weights[p * CHANNELS + k];
      return sum / (SIZE * SIZE);
    });
    const cam = Array.from({ length: SIZE * SIZE }, (_, p) =>
      Math.max(
        0,
        channelWeights.reduce((acc, w, k) => acc + w * activations[p * CHANNELS + k], 0),
      ),
    );
    const max = Math.max(...cam);
    return cam.map((v) => v / max);
  }

  it('equals ReLU(sum_k mean(dY/dA_k) * A_k), normalised, and reports the model probability', async () => {
    const { model, featureModel, weights } = convDenseModel(1);
    const image = randomImage(SIZE, 5);
    const expected = reference(featureModel, weights, image);
    expect(Math.max(...expected)).toBe(1);
    expect(expected.filter((v) => v === 0).length).toBeLessThan(SIZE * SIZE); // non-degenerate case

    const before = tf.memory().numTensors;
    const { heatmap, probability } = await gradCam(model, image, SIZE);
    expect(tf.memory().numTensors).toBe(before);
    expect(heatmap).toHaveLength(SIZE * SIZE);
    heatmap.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
    expect(probability).toBeCloseTo(predict(model, image, SIZE), 6);
  });

  it('still explains a saturated prediction (gradient of the logit, not the probability)', async () => {
    const { model, featureModel, weights } = convDenseModel(1000);
    const image = randomImage(SIZE, 5);
    const { heatmap, probability } = await gradCam(model, image, SIZE, { layerName: 'feat' });
    expect([0, 1]).toContain(probability); // float32 sigmoid saturates
    const expected = reference(featureModel, weights, image);
    heatmap.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 4));
  });
});

describe('gradCam localisation', () => {
  const SIZE = 16;

  /**
   * Gray image with a bright square in the top-right quadrant and a dark one in the bottom-left.
   * Channel 0 of the 1x1 conv fires only on bright pixels (> 0.55), channel 1 only on dark ones (< 0.45); the dense head reads ONE
   * channel in ONE quadrant, so the output depends only on that quadrant.
   */
  function quadrantModel(quadrant: 'topRight' | 'bottomLeft') {
    const input = tf.input({ shape: [SIZE, SIZE, 1] });
    const conv = tf.layers.conv2d({ name: 'feat', filters: 2, kernelSize: 1, activation: 'relu' });
    const features = conv.apply(input) as tf.SymbolicTensor;
    const pooled = tf.layers.maxPooling2d({ name: 'pool', poolSize: 2 }).apply(features) as tf.SymbolicTensor;
    const flat = tf.layers.flatten().apply(pooled) as tf.SymbolicTensor;
    const dense = tf.layers.dense({ units: 1, activation: 'sigmoid' });
    const output = dense.apply(flat) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: output });
    const half = SIZE / 4; // pooled map is 8x8, quadrants 4x4
    const [rows, cols, channel] = quadrant === 'topRight' ? [[0, half], [half, 2 * half], 0] : [[half, 2 * half], [0, half], 1];
    const kernel = new Float32Array(2 * half * 2 * half * 2);
    for (let r = rows[0]; r < rows[1]; r++) {
      for (let c = cols[0]; c < cols[1]; c++) kernel[(r * 2 * half + c) * 2 + channel] = 1;
    }
    tf.tidy(() => {
      conv.setWeights([tf.tensor4d([1, -1], [1, 1, 1, 2]), tf.tensor1d([-0.55, 0.45])]);
      dense.setWeights([tf.tensor2d(kernel, [kernel.length, 1]), tf.tensor1d([0])]);
    });
    return model;
  }

  const image = new Uint8Array(SIZE * SIZE).fill(128);
  for (let r = 2; r < 6; r++) {
    for (let c = 2; c < 6; c++) {
      image[r * SIZE + (c + 8)] = 255; // top-right
      image[(r + 8) * SIZE + c] = 0; // bottom-left
    }
  }

  it('puts the heatmap mass in the quadrant the output depends on', async () => {
    const topRight = quadrantModel('topRight');
    const a = await gradCam(topRight, image, SIZE, { layerName: 'pool' });
    expect(massIn(a.heatmap, SIZE, 0, 8, 8, 16)).toBeGreaterThan(0.99);
    expect(Math.max(...a.heatmap)).toBeCloseTo(1, 6);
    expect(Math.min(...a.heatmap)).toBeGreaterThanOrEqual(0);

    // Same image, model reading the other quadrant: the map follows the model, not the image.
    const bottomLeft = quadrantModel('bottomLeft');
    const b = await gradCam(bottomLeft, image, SIZE, { layerName: 'pool' });
    expect(massIn(b.heatmap, SIZE, 8, 16, 0, 8)).toBeGreaterThan(0.99);
  });

  it('defaults to the last convolution when the model has no LAST_CONV_LAYER', async () => {
    const model = quadrantModel('topRight');
    const byDefault = await gradCam(model, image, SIZE);
    const explicit = await gradCam(model, image, SIZE, { layerName: 'feat' });
    expect(Array.from(byDefault.heatmap)).toEqual(Array.from(explicit.heatmap));
    expect(massIn(byDefault.heatmap, SIZE, 0, 8, 8, 16)).toBeGreaterThan(0.99);
  });

  it('fails clearly on an unknown layer or a wrongly sized image', async () => {
    const model = quadrantModel('topRight');
    await expect(gradCam(model, image, SIZE, { layerName: 'nope' })).rejects.toThrow(/'nope'.*choose one of: feat, pool/);
    await expect(gradCam(model, new Uint8Array(64), 8)).rejects.toThrow(/expects 16x16 images but got 8x8/);
    await expect(gradCam(model, new Uint8Array(10), SIZE)).rejects.toThrow(/10 pixels/);
  });
});

describe('gradCam on other graph shapes', () => {
  it('gives the same map for a Sequential model and a functional model sharing its layers', async () => {
    const conv = tf.layers.conv2d({
      inputShape: [8, 8, 1],
      name: 'c',
      filters: 2,
      kernelSize: 3,
      padding: 'same',
      activation: 'relu',
      kernelInitializer: tf.initializers.randomNormal({ seed: 8 }),
    });
    const flatten = tf.layers.flatten();
    const dense = tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.constant({ value: 0.1 }) });
    const sequential = tf.sequential({ layers: [conv, flatten, dense] });
    // Re-using the layers gives each a second inbound node: the map must follow this model's own graph.
    const input = tf.input({ shape: [8, 8, 1] });
    const functional = tf.model({
      inputs: input,
      outputs: dense.apply(flatten.apply(conv.apply(input))) as tf.SymbolicTensor,
    });
    const image = randomImage(8, 2);
    const a = await gradCam(sequential, image, 8);
    const b = await gradCam(functional, image, 8);
    expect(Math.max(...a.heatmap)).toBeCloseTo(1, 6);
    expect(Array.from(b.heatmap)).toEqual(Array.from(a.heatmap));
    expect(b.probability).toBe(a.probability);
  });
});

describe('gradCam on the project model', () => {
  it('uses LAST_CONV_LAYER, runs dropout/batch-norm in inference mode and leaks nothing', async () => {
    const size = 32;
    // An untrained network often has no positive evidence for a given image, and then the map is rightly all zero;
    // this seed's weights give this image some, so the normalisation to a maximum of 1 is checked too.
    const model = buildModel({ variant: 'small', imageSize: size, seed: 4 });
    // Non-trivial moving statistics: batch-norm is no longer ~identity, and training mode (batch statistics)
    // would change the probability.
    const bn = model.getLayer('block5_bn');
    const channels = bn.getWeights()[0].shape[0];
    const rng = makeRng(4);
    const values = (low: number, high: number) => tf.tensor1d(Array.from({ length: channels }, () => low + rng() * (high - low)));
    // gamma, beta, moving mean, moving variance
    tf.tidy(() => bn.setWeights([values(0.5, 1.5), values(-0.5, 0.5), values(-0.5, 0.5), values(0.3, 2)]));
    const image = randomImage(size, 9);
    const before = tf.memory().numTensors;
    const first = await gradCam(model, image, size);
    const second = await gradCam(model, image, size);
    const explicit = await gradCam(model, image, size, { layerName: 'block5_bn' });
    expect(tf.memory().numTensors).toBe(before);
    expect(first.heatmap).toHaveLength(size * size);
    expect(first.heatmap.every((v) => v >= 0 && v <= 1)).toBe(true);
    expect(Array.from(second.heatmap)).toEqual(Array.from(first.heatmap));
    expect(Array.from(explicit.heatmap)).toEqual(Array.from(first.heatmap));
    expect(Math.max(...first.heatmap)).toBeCloseTo(1, 6);
    expect(first.probability).toBeCloseTo(predict(model, image, size), 6);
    // The default really is block5_bn, not merely the last convolution before it.
    const conv = await gradCam(model, image, size, { layerName: 'block5_sepconv2' });
    const difference = Math.max(...first.heatmap.map((v, i) => Math.abs(v - conv.heatmap[i])));
    expect(difference).toBeGreaterThan(0.05);
    model.dispose();
  });
});

describe('gradCamOverlayPng', () => {
  const size = 12;
  const image = Uint8Array.from({ length: size * size }, (_, i) => (i * 7) % 256);

  async function rawPixels(png: Buffer) {
    return sharp(png).raw().toBuffer({ resolveWithObject: true });
  }

  it('decodes to an RGB PNG of the requested size', async () => {
    const heatmap = Float32Array.from({ length: size * size }, (_, i) => i / (size * size));
    const png = await gradCamOverlayPng(image, heatmap, size, { outSize: 40 });
    const meta = await sharp(png).metadata();
    expect(meta.format).toBe('png');
    expect([meta.width, meta.height, meta.channels]).toEqual([40, 40, 3]);
    const same = await sharp(await gradCamOverlayPng(image, heatmap, size)).metadata();
    expect([same.width, same.height]).toEqual([size, size]);
  });

  it('blends: alpha 0 is the X-ray, alpha 1 is the colour map', async () => {
    const hot = new Float32Array(size * size).fill(1);
    const plain = await rawPixels(await gradCamOverlayPng(image, hot, size, { alpha: 0 }));
    for (let p = 0; p < size * size; p++) {
      expect([plain.data[p * 3], plain.data[p * 3 + 1], plain.data[p * 3 + 2]]).toEqual([image[p], image[p], image[p]]);
    }
    const colour = await rawPixels(await gradCamOverlayPng(image, hot, size, { alpha: 1 }));
    expect([colour.data[0], colour.data[1], colour.data[2]]).toEqual(jet(1));
    expect(jet(1)).toEqual([128, 0, 0]);
    expect(jet(0)).toEqual([0, 0, 128]);
    expect(jet(0.5)).toEqual([128, 255, 128]);
  });

  it('rejects mismatched inputs', async () => {
    await expect(gradCamOverlayPng(image, new Float32Array(3), size)).rejects.toThrow(/must both hold 12x12/);
    await expect(gradCamOverlayPng(image, new Float32Array(size * size), size, { alpha: 2 })).rejects.toThrow(/alpha/);
  });
});
