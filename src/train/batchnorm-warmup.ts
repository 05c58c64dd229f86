/**
 * Batch-norm moving averages that forget their starting point.
 *
 * A batch-norm layer's moving mean and variance start at 0 and 1 and move towards the data by (1 - momentum) per
 * step. The real per-channel variance of this network's activations is 1e-2 to 1e-4, so after a short run (the
 * demo set is 7 steps an epoch; a quick report 5) the moving variance is still mostly the initial 1: inference
 * divides by about 1 instead of about 0.03, squashes every feature towards zero and outputs the same probability for
 * every image, while training-mode metrics look fine.
 *
 * The remedy is the bias-corrected average (as in Adam, or PyTorch's cumulative average): on step t (0-based) the
 * layer uses momentum min(m, t / (t + 1)), so step 0 replaces the initial values by the batch statistics, the next
 * steps average the batches seen so far, and from step 1 / (1 - m) on it is the configured exponential average.
 * The configured momentum is restored after each step, so saved models carry it unchanged.
 */
import type * as tf from '@tensorflow/tfjs';

interface BatchNormLike {
  momentum: number;
}

function batchNormLayers(model: tf.LayersModel): BatchNormLike[] {
  return model.layers.filter((l) => l.getClassName() === 'BatchNormalization') as unknown as BatchNormLike[];
}

/** The momentum a layer configured with `momentum` uses on global training step `step` (0-based). */
export function warmupMomentum(momentum: number, step: number): number {
  return Math.min(momentum, step / (step + 1));
}

/**
 * Runs `fn` (one training step) with every batch-norm layer's momentum warmed up for global step `step`, then
 * restores the configured momenta.
 */
export function withBatchNormWarmup<T>(model: tf.LayersModel, step: number, fn: () => T): T {
  const layers = batchNormLayers(model);
  const configured = layers.map((l) => l.momentum);
  layers.forEach((l, i) => (l.momentum = warmupMomentum(configured[i], step)));
  try {
    return fn();
  } finally {
    layers.forEach((l, i) => (l.momentum = configured[i]));
  }
}
