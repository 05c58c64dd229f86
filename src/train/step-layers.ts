/**
 * Layer settings that change from one training step to the next: batch-norm's moving-average momentum during the
 * first steps, and the dropout masks' seeds. Both are set on the stock tfjs layers around one step and restored
 * afterwards, so saved models carry their configured values and load anywhere without custom classes.
 *
 * Batch-norm: a layer's moving mean and variance start at 0 and 1 and move towards the data by (1 - momentum) per
 * step. The real per-channel variance of this network's activations is 1e-2 to 1e-4, so after a short run (the old
 * demo set had 7 steps an epoch, a quick report 5) the moving variance was still mostly the initial 1: inference
 * divided by about 1 instead of about 0.03, squashed every feature towards zero and gave every image the same
 * probability while training-mode metrics looked fine. The remedy is the bias-corrected average (as in Adam, or
 * PyTorch's cumulative average): on step t (0-based) the layer uses momentum min(m, t / (t + 1)), so step 0 replaces
 * the initial values by the batch statistics, the next steps average the batches seen so far, and from step
 * 1 / (1 - m) on it is the configured exponential average.
 *
 * Dropout: an unseeded tfjs dropout draws from Math.random, so two runs with one seed differ; a seeded one draws
 * the same mask on every call, which turns regularisation into fixed pruning. A seed derived from (run seed, step,
 * layer) gives a new mask every step and the same masks on every run with that seed.
 */
import type * as tf from '@tensorflow/tfjs';
import { deriveSeed } from '../random';

interface BatchNormLike {
  momentum: number;
}

interface DropoutLike {
  seed?: number;
}

/** Keeps dropout seeds apart from the data streams that derive from the same run seed. */
const DROPOUT_STREAM = 3;

/** The momentum a layer configured with `momentum` uses on global training step `step` (0-based). */
export function warmupMomentum(momentum: number, step: number): number {
  return Math.min(momentum, step / (step + 1));
}

/** The seed of the `layerIndex`-th dropout layer's mask on global training step `step`. */
export function dropoutSeed(runSeed: number, step: number, layerIndex: number): number {
  return deriveSeed(runSeed, DROPOUT_STREAM, step, layerIndex);
}

/** The model's layers of one tfjs class (`BatchNormalization`, `Dropout`), typed as the fields a caller sets. */
export function layersOf<T>(model: tf.LayersModel, className: string): T[] {
  return model.layers.filter((l) => l.getClassName() === className) as unknown as T[];
}

/**
 * Runs `fn` (one training step, global index `step`) with batch-norm momenta warmed up and dropout masks seeded
 * from `runSeed`, then restores the layers' configured values.
 */
export function withStepLayers<T>(model: tf.LayersModel, step: number, runSeed: number, fn: () => T): T {
  const norms = layersOf<BatchNormLike>(model, 'BatchNormalization');
  const drops = layersOf<DropoutLike>(model, 'Dropout');
  const momenta = norms.map((l) => l.momentum);
  const seeds = drops.map((l) => l.seed);
  norms.forEach((l, i) => (l.momentum = warmupMomentum(momenta[i], step)));
  drops.forEach((l, i) => (l.seed = dropoutSeed(runSeed, step, i)));
  try {
    return fn();
  } finally {
    norms.forEach((l, i) => (l.momentum = momenta[i]));
    drops.forEach((l, i) => (l.seed = seeds[i]));
  }
}
