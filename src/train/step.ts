/**
 * One training step, the one `train()` runs and `npm run bench:train` times, so what is benchmarked is what trains:
 * mixup (when configured), a training-mode forward pass (dropout masks seeded per step, batch-norm momenta warmed up:
 * step-layers.ts), class-weighted binary cross-entropy on smoothed labels, gradients of the trainable weights and the
 * optimizer update.
 */
import * as tf from '@tensorflow/tfjs';
import { deriveSeed, makeRng } from '../random';
import { mixupBatch, smoothLabels, weightedBinaryCrossEntropy } from './loss';
import { withStepLayers } from './step-layers';

export interface StepSettings {
  /** Seeds dropout masks and mixup draws, with the step index. */
  seed: number;
  /** [normal, pneumonia] loss weights, or none. */
  classWeights?: readonly [number, number];
  labelSmoothing?: number;
  mixup?: number;
}

export interface StepOutput {
  /** The batch loss (a scalar) and the training-mode probabilities; the caller reads and disposes them. */
  loss: tf.Scalar;
  probs: tf.Tensor;
}

/** Global step index -> one optimizer update on (xs, ys). Inputs are not disposed. */
export type TrainStep = (xs: tf.Tensor4D, ys: tf.Tensor, step: number) => StepOutput;

/** Keeps mixup's draws apart from dropout (3), batch order (1) and augmentation (2) streams of the same seed. */
const MIXUP_STREAM = 4;

export function makeTrainStep(model: tf.LayersModel, optimizer: tf.Optimizer, settings: StepSettings): TrainStep {
  // Moments are matched to variables by position, so this order must be the same on resume.
  const varList = model.trainableWeights.map((w) => w.read() as tf.Variable);
  return (batchXs, ys, step) => {
    const mixed = settings.mixup
      ? mixupBatch(batchXs, ys, settings.mixup, makeRng(deriveSeed(settings.seed, MIXUP_STREAM, step)))
      : undefined;
    const xs = mixed?.xs ?? batchXs;
    const targets = mixed?.ys ?? ys;
    let probs: tf.Tensor | undefined;
    try {
      const loss = withStepLayers(model, step, settings.seed, () =>
        optimizer.minimize(
          () => {
            const p = model.apply(xs, { training: true }) as tf.Tensor;
            probs = tf.keep(p);
            return weightedBinaryCrossEntropy(smoothLabels(targets, settings.labelSmoothing ?? 0), p, settings.classWeights);
          },
          true,
          varList,
        ),
      );
      if (!loss || !probs) throw new Error('optimizer.minimize returned no loss');
      return { loss, probs };
    } finally {
      if (mixed) tf.dispose([mixed.xs, mixed.ys]);
    }
  };
}

/** Runs one step and returns its loss as a number, releasing the step's tensors (benchmarks and tests). */
export function runStep(step: TrainStep, xs: tf.Tensor4D, ys: tf.Tensor, index: number): number {
  const { loss, probs } = step(xs, ys, index);
  const value = loss.dataSync()[0];
  tf.dispose([loss, probs]);
  return value;
}
