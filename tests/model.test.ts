/** The model module: architecture, names Grad-CAM relies on, reproducible builds, summaries, the shared train step. */
import { beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { makeRng } from '../src/random';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_MODEL, LAST_CONV_LAYER, buildModel, modelSummary, modelSummaryRows } from '../src/model';
import { makeTrainStep, runStep } from '../src/train/step';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('buildModel', () => {
  it('builds the seed architecture at 150x150x1 with predictable layer names', () => {
    const model = buildModel(DEFAULT_MODEL);
    const names = model.layers.map((l) => l.name);
    expect(names.slice(0, 4)).toEqual(['input', 'block1_conv1', 'block1_conv2', 'block1_pool']);
    for (let b = 2; b <= 5; b++) {
      for (const suffix of ['sepconv1', 'sepconv2', 'bn', 'pool']) expect(names).toContain(`block${b}_${suffix}`);
    }
    expect(names).toContain('block4_dropout');
    expect(names).toContain('block5_dropout');
    expect(names).not.toContain('block3_dropout');
    expect(names.slice(-8)).toEqual([
      'flatten',
      'dense_512',
      'dense_512_dropout',
      'dense_128',
      'dense_128_dropout',
      'dense_64',
      'dense_64_dropout',
      'output',
    ]);
    expect(model.getLayer('block5_sepconv2').getClassName()).toBe('SeparableConv2D');
    expect(model.getLayer('block5_pool').outputShape).toEqual([null, 4, 4, 256]);
    expect(model.outputs[0].shape).toEqual([null, 1]);
    // Pinned: a change here is an architecture change that saved weights and reports would notice.
    expect(model.countParams()).toBe(2_314_049);
    model.dispose();
  });

  it('exposes a 4D LAST_CONV_LAYER (the feature map before the last pooling) in both variants', () => {
    for (const cfg of [DEFAULT_MODEL, { variant: 'small' as const, imageSize: 64 }]) {
      const model = buildModel(cfg);
      const shape = model.getLayer(LAST_CONV_LAYER).outputShape as number[];
      expect(shape).toHaveLength(4);
      const pooled = model.getLayer('block5_pool').outputShape as number[];
      expect(pooled[1]).toBe(Math.floor(shape[1] / 2));
      model.dispose();
    }
  });

  it('is reproducible from its seed, and different seeds differ', () => {
    const weights = (seed: number) => {
      const m = buildModel({ variant: 'small', imageSize: 32, seed });
      const values = m.getWeights().map((w) => Array.from(w.dataSync()));
      m.dispose();
      return values;
    };
    expect(weights(7)).toEqual(weights(7));
    expect(weights(7)).not.toEqual(weights(8));
  });

  it('rejects configurations it cannot build, saying why', () => {
    expect(() => buildModel({ variant: 'small', imageSize: 16 })).toThrow(/imageSize must be an integer >= 32/);
    expect(() => buildModel({ variant: 'small', imageSize: 64, channels: 2 })).toThrow(/channels must be 1 .* or 3/);
    expect(() => buildModel({ variant: 'huge' as never, imageSize: 64 })).toThrow(/Unknown model variant 'huge'/);
  });

  it('supports RGB input', () => {
    const model = buildModel({ variant: 'small', imageSize: 32, channels: 3 });
    expect(model.inputs[0].shape).toEqual([null, 32, 32, 3]);
    model.dispose();
  });
});

describe('summaries', () => {
  it('lists every layer with shape and params, and totals that add up', () => {
    const model = buildModel({ variant: 'small', imageSize: 64 });
    const rows = modelSummaryRows(model);
    expect(rows).toHaveLength(model.layers.length);
    expect(rows[1]).toEqual({ layer: 'block1_conv1', type: 'Conv2D', outputShape: '[null,64,64,4]', params: 3 * 3 * 4 + 4 });
    expect(rows.reduce((s, r) => s + r.params, 0)).toBe(model.countParams());
    const text = modelSummary(model);
    expect(text).toContain('block5_bn');
    expect(text).toContain(`Total params: ${model.countParams().toLocaleString('en-US')}`);
    // Batch-norm moving mean/variance are the only non-trainable weights: 2 x channels per bn layer.
    expect(text).toContain(`Non-trainable params: ${2 * (8 + 8 + 16 + 16)}`);
    model.dispose();
  });
});

describe('makeTrainStep', () => {
  it('lowers the loss on a fixed batch, updates batch-norm statistics, and leaks no tensors', () => {
    // Dropout masks are seeded per step; a counting Math.random would fail if a layer still drew from it.
    const random = vi.spyOn(Math, 'random').mockImplementation(makeRng(5));
    onTestFinished(() => random.mockRestore());
    const model = buildModel({ variant: 'small', imageSize: 32, seed: 1 });
    const optimizer = tf.train.adam(1e-2);
    const trainStep = makeTrainStep(model, optimizer, { seed: 1 });
    let index = 0;
    const step = (xs: tf.Tensor4D, ys: tf.Tensor) => runStep(trainStep, xs, ys, index++);
    const x = tf.randomUniform([4, 32, 32, 1], 0, 1, 'float32', 2) as tf.Tensor4D;
    const y = tf.tensor1d([0, 1, 0, 1]);
    const movingMean = () => model.getLayer('block2_bn').getWeights()[2].dataSync()[0];
    const meanBefore = movingMean();
    const first = step(x, y);
    const tensors = tf.memory().numTensors;
    let last = first;
    for (let i = 0; i < 10; i++) last = step(x, y);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(Number.isFinite(first)).toBe(true);
    expect(last).toBeLessThan(first);
    expect(movingMean()).not.toBe(meanBefore);
    expect(random).not.toHaveBeenCalled();
    tf.dispose([x, y]);
    optimizer.dispose();
    model.dispose();
  });
});
