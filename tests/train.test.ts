import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_TRAIN, TrainConfig, lossAccAuc, train } from '../src/train/train';
import { balancedClassWeights, weightedBinaryCrossEntropy } from '../src/train/loss';
import type { Callback } from '../src/train/callbacks';
import { syntheticImages, tinyModel, weightsOf } from './train-fixtures';

const config: TrainConfig = { ...DEFAULT_TRAIN, epochs: 3, batchSize: 8, learningRate: 1e-2, augment: {}, seed: 3 };
const data = { train: syntheticImages(32, 16, 1), val: syntheticImages(16, 16, 2) };

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('weightedBinaryCrossEntropy', () => {
  it('matches the hand-computed mean BCE, and class weights scale each sample', () => {
    const ys = tf.tensor2d([[1], [0]]);
    const ps = tf.tensor2d([[0.8], [0.4]]);
    const plain = weightedBinaryCrossEntropy(ys, ps);
    const weighted = weightedBinaryCrossEntropy(ys, ps, [0.5, 3]);
    const a = -Math.log(0.8);
    const b = -Math.log(0.6);
    expect(plain.dataSync()[0]).toBeCloseTo((a + b) / 2, 5);
    expect(weighted.dataSync()[0]).toBeCloseTo((3 * a + 0.5 * b) / 2, 5);
    tf.dispose([ys, ps, plain, weighted]);
  });

  it('balanced weights are n / (2 n_c)', () => {
    expect(balancedClassWeights(Uint8Array.from([1, 1, 1, 0]))).toEqual([2, 4 / 6]);
    expect(balancedClassWeights(Uint8Array.from([1, 1]))).toEqual([1, 1]);
  });
});

describe('lossAccAuc', () => {
  it('computes unweighted loss, accuracy at 0.5 and AUC', () => {
    const r = lossAccAuc([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]);
    expect(r.acc).toBe(0.5);
    expect(r.auc).toBe(0.75);
    expect(r.loss).toBeCloseTo(-(Math.log(0.9) + Math.log(0.8) + Math.log(0.4) + Math.log(0.4)) / 4, 6);
  });
});

describe('train', () => {
  it('learns the synthetic task, logs val metrics, lr and time, and leaks no tensors between epochs', async () => {
    const model = tinyModel();
    const tensorsAtEpochEnd: number[] = [];
    const probe: Callback = { onEpochEnd: () => void tensorsAtEpochEnd.push(tf.memory().numTensors) };
    const result = await train(model, data, { ...config, epochs: 6 }, [probe]);
    expect(result.history.map((h) => h.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const h of result.history) {
      expect(Number.isFinite(h.val_loss) && Number.isFinite(h.val_auc) && Number.isFinite(h.loss)).toBe(true);
      expect(h.lr).toBe(1e-2);
      expect(h.seconds).toBeGreaterThanOrEqual(0);
    }
    expect(result.history[5].loss).toBeLessThan(result.history[0].loss);
    expect(result.history[5].val_auc).toBeGreaterThan(0.8);
    // Adam's moments appear during epoch 1; after that the count must stay flat.
    expect(new Set(tensorsAtEpochEnd.slice(0)).size).toBe(1);
    result.optimizer.dispose();
    model.dispose();
  });

  it('class weights change the loss (same init, same batches)', async () => {
    const imbalanced = { train: syntheticImages(32, 16, 1, 0.75), val: data.val };
    const runs: number[] = [];
    for (const classWeights of ['none', 'balanced'] as const) {
      const model = tinyModel();
      const r = await train(model, imbalanced, { ...config, epochs: 1, classWeights });
      runs.push(r.history[0].loss);
      r.optimizer.dispose();
      model.dispose();
    }
    expect(Math.abs(runs[0] - runs[1])).toBeGreaterThan(1e-4);
  });

  it('uses the training-mode forward pass: it updates batch-norm moving statistics', async () => {
    const model = tinyModel();
    const bn = model.layers.find((l) => l.getClassName() === 'BatchNormalization')!;
    const movingMeanBefore = (await bn.getWeights()[2].data()).slice();
    const r = await train(model, data, { ...config, epochs: 1 });
    const movingMeanAfter = await bn.getWeights()[2].data();
    expect(Array.from(movingMeanAfter)).not.toEqual(Array.from(movingMeanBefore));
    r.optimizer.dispose();
    model.dispose();
  });

  it('a callback setting stopTraining ends after that epoch; an abort abandons the running epoch', async () => {
    const model = tinyModel();
    const stopAt2: Callback = {
      onEpochEnd: (epoch, _l, ctx) => {
        if (epoch === 2) ctx.stopTraining = true;
      },
    };
    const r = await train(model, data, { ...config, epochs: 5 }, [stopAt2]);
    expect(r.history.length).toBe(2);
    expect(r.stoppedEarly).toBe(true);
    r.optimizer.dispose();

    const controller = new AbortController();
    const abortInEpoch2: Callback = {
      onBatchEnd: (batch, _l, ctx) => {
        if (ctx.history.length === 1 && batch === 1) controller.abort();
      },
    };
    const before = tf.memory().numTensors;
    const r2 = await train(model, data, { ...config, epochs: 5 }, [abortInEpoch2], { signal: controller.signal });
    expect(r2.interrupted).toBe(true);
    expect(r2.history.map((h) => h.epoch)).toEqual([1]);
    r2.optimizer.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('continues from initialEpoch with the given history and learning rate', async () => {
    const model = tinyModel();
    const first = await train(model, data, { ...config, epochs: 2 });
    const state = await first.optimizer.getWeights();
    const r = await train(model, data, { ...config, epochs: 3 }, [], {
      initialEpoch: 2,
      history: first.history,
      optimizerState: state,
      learningRate: 5e-3,
    });
    expect(r.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    expect(r.epochsRun).toBe(1);
    expect(r.history[2].lr).toBe(5e-3);
    expect(r.optimizer.iterations).toBe(3 * 4);
    first.optimizer.dispose();
    r.optimizer.dispose();
    model.dispose();
  });

  it('rejects bad settings with a clear message', async () => {
    const model = tinyModel();
    await expect(train(model, data, { ...config, epochs: 0 })).rejects.toThrow(/epochs must be an integer >= 1/);
    await expect(train(model, { ...data, train: syntheticImages(0) }, config)).rejects.toThrow(/training split is empty/);
    model.dispose();
  });

  it('weights change during training (sanity)', async () => {
    const model = tinyModel();
    const before = await weightsOf(model);
    const r = await train(model, data, { ...config, epochs: 1 });
    const after = await weightsOf(model);
    expect(after[0]).not.toEqual(before[0]);
    r.optimizer.dispose();
    model.dispose();
  });
});
