import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { TrainContext } from '../src/train/types';
import { recomputeBatchNormStats, swaStartEpoch, weightAveraging } from '../src/train/swa';
import { syntheticImages, tinyModel } from './train-fixtures';
import { averagingJudge } from '../src/pipeline/steps';
import type { EpochLogs } from '../src/train/types';

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-swa-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Sets every weight of `model` to the constant `value` (as if an epoch had ended there). */
function setAll(model: tf.LayersModel, value: number): void {
  model.setWeights(model.weights.map((w) => tf.fill(w.shape as number[], value)));
}

function firstValues(model: tf.LayersModel): number[] {
  return model.getWeights().map((w) => w.dataSync()[0]);
}

const ctxOf = (model: tf.LayersModel) => ({ model }) as unknown as TrainContext;
const noLogs = {} as never;

describe('swaStartEpoch', () => {
  it("starts 'second-half' after half the epochs, so every run length averages something", () => {
    expect([1, 2, 3, 10, 11].map((epochs) => swaStartEpoch({ epochs, swaFrom: 'second-half' }))).toEqual([1, 2, 2, 6, 6]);
    expect(swaStartEpoch({ epochs: 10, swaFrom: 4 })).toBe(4);
    expect(swaStartEpoch({ epochs: 10, swaFrom: 0 })).toBe(0);
    expect(swaStartEpoch({ epochs: 10 })).toBe(0);
    expect(() => swaStartEpoch({ epochs: 3, swaFrom: 4 })).toThrow(/--swa-from 4 starts after the last epoch \(3\)/);
  });
});

describe('weightAveraging', () => {
  it('keeps the mean of the epochs from `from` on, saves it each epoch and resumes with it', async () => {
    const model = tinyModel();
    const out = path.join(dir, 'mean');
    const swa = weightAveraging({ dir: out, from: 2 });
    for (const [epoch, value] of [
      [1, 100],
      [2, 1],
      [3, 2],
      [4, 6],
    ]) {
      setAll(model, value);
      await swa.onEpochEnd!(epoch, noLogs, ctxOf(model));
    }
    expect(swa.epochs).toEqual([2, 3, 4]);
    // Only this epoch's mean and the one before survive.
    expect(fs.readdirSync(out).sort()).toEqual(['after-epoch-3', 'after-epoch-4']);
    const averaged = tinyModel();
    expect(swa.applyTo(averaged)).toBe(true);
    for (const v of firstValues(averaged)) expect(v).toBeCloseTo(3, 6); // (1 + 2 + 6) / 3; epoch 1 left out

    // A resumed run restores the epochs from the checkpoint's state and the mean from disk, then goes on.
    const resumed = weightAveraging({ dir: out, from: 2 });
    resumed.setState!(swa.getState!());
    const model2 = tinyModel();
    resumed.onTrainBegin!(ctxOf(model2));
    setAll(model2, 11);
    await resumed.onEpochEnd!(5, noLogs, ctxOf(model2));
    expect(resumed.epochs).toEqual([2, 3, 4, 5]);
    resumed.applyTo(averaged);
    for (const v of firstValues(averaged)) expect(v).toBeCloseTo(5, 6); // (1 + 2 + 6 + 11) / 4
  });

  it('leaves the model alone when no epoch was averaged, and names the missing file on a broken resume', async () => {
    const swa = weightAveraging({ dir: path.join(dir, 'none'), from: 3 });
    const model = tinyModel();
    setAll(model, 4);
    await swa.onEpochEnd!(1, noLogs, ctxOf(model));
    expect(swa.applyTo(model)).toBe(false);
    expect(firstValues(model).every((v) => v === 4)).toBe(true);

    const broken = weightAveraging({ dir: path.join(dir, 'gone'), from: 1 });
    broken.setState!({ epochs: [1, 2] });
    expect(() => broken.onTrainBegin!(ctxOf(model))).toThrow(/after-epoch-2 is missing/);
    expect(() => weightAveraging({ dir, from: 0 })).toThrow(/whole epoch >= 1/);
  });
});

describe('recomputeBatchNormStats', () => {
  it("sets the moving statistics to the average of the batches' statistics and restores the momentum", async () => {
    const size = 4;
    const input = tf.input({ shape: [size, size, 1] });
    const bn = tf.layers.batchNormalization({ momentum: 0.9 });
    const model = tf.model({ inputs: input, outputs: bn.apply(input) as tf.SymbolicTensor });
    const images = syntheticImages(12, size, 3);
    const batches = await recomputeBatchNormStats(model, images, 4);
    expect(batches).toBe(3);
    // By hand: each batch of 4 images' mean and (biased) variance of its pixels in [0, 1], averaged over the 3.
    const px = Array.from(images.pixels, (v) => v / 255);
    const per = size * size * 4;
    let meanSum = 0;
    let varSum = 0;
    for (let b = 0; b < 3; b++) {
      const part = px.slice(b * per, (b + 1) * per);
      const m = part.reduce((s, v) => s + v, 0) / per;
      meanSum += m;
      varSum += part.reduce((s, v) => s + (v - m) ** 2, 0) / per;
    }
    const [movingMean, movingVariance] = bn.getWeights().slice(2);
    expect(movingMean.dataSync()[0]).toBeCloseTo(meanSum / 3, 5);
    expect(movingVariance.dataSync()[0]).toBeCloseTo(varSum / 3, 5);
    expect((bn as unknown as { momentum: number }).momentum).toBe(0.9);
  });
});

describe('averagingJudge', () => {
  const images = (n: number) => syntheticImages(n, 8);
  const row = (epoch: number, val_loss: number, val_time_loss?: number) => ({ epoch, val_loss, val_time_loss }) as EpochLogs;
  const history = [row(1, 0.5, 0.6), row(2, 0.3, 0.45), row(3, 0.4, 0.2)];
  const checkpoint = { best: 0.3, bestEpoch: 2 };

  it("compares on the split that did not choose the best epoch, at the best epoch's loss there", () => {
    const both = { train: images(4), val: images(4), valTime: images(6) };
    const j = averagingJudge(both, 'val_loss', history, checkpoint);
    expect([j.judgedOn, j.bestLoss, j.images]).toEqual(['val_time_loss', 0.45, both.valTime]);
    const byTime = averagingJudge(both, 'val_time_loss', history, { best: 0.2, bestEpoch: 3 });
    expect([byTime.judgedOn, byTime.bestLoss, byTime.images]).toEqual(['val_loss', 0.4, both.val]);
  });

  it('falls back to the monitored split without an out-of-time one (the demo set)', () => {
    const onlyVal = { train: images(4), val: images(4), valTime: undefined };
    const j = averagingJudge(
      onlyVal,
      'val_loss',
      history.map((h) => ({ ...h, val_time_loss: undefined })),
      checkpoint,
    );
    expect([j.judgedOn, j.bestLoss, j.images]).toEqual(['val_loss', 0.3, onlyVal.val]);
  });
});
