/**
 * Batch-norm in training mode as one op with its own gradient, on every backend that registers the gradient kernel
 * BATCH_NORM_TRAIN_GRAD (`native`: onednn/batchnorm.ts; `wasm`: wasm/fused.ts).
 *
 * tfjs-layers computes a training-mode batch-norm as moments() (a mean, a squared difference and a second mean)
 * followed by batchNorm, and differentiates through every one of them: per layer and step, two tiled means,
 * squaredDifference's three-op gradient and two additions of activation-sized tensors, on top of batchNorm's own
 * gradient. The closed form of the whole gradient needs two per-channel sums and one pass over the activations:
 * dx = s r (dy - S1 / n - (x - mean) r^2 S2 / n), with r = 1 / sqrt(variance + eps), S1 = sum dy and
 * S2 = sum dy (x - mean). tfjs-layers has no hook for it, so, as adam.ts does for Adam's update, this
 * replaces a method of a global class, `BatchNormalization.prototype.call`:
 * - installFusedBatchNorm() puts it in place and uninstallFusedBatchNorm() restores tfjs's method;
 * - it takes over only training-mode calls on a backend with the gradient kernel, with one float32 channels-last
 *   input, `axis` the last one, `center` and `scale` on and the private layout below (batchNormLayoutProblem);
 *   anything else runs tfjs's method;
 * - the forward pass runs the same kernels as tfjs's (Mean, SquaredDifference, Mean, FusedBatchNorm; the statistics
 *   in one BATCH_NORM_MOMENTS pass where the backend has it), and the
 *   moving mean and variance are updated with tfjs 4.22's ops and the layer's momentum at call time (which
 *   src/train/step-layers.ts warms up).
 * tests/accel-batchnorm-patch.test.ts compares it with tfjs's method and fails when a tfjs upgrade changes the
 * layout or the results: the time to compare this file with tfjs-layers' normalization.js again.
 */
import * as tf from '@tensorflow/tfjs';
import { activeBackendHas } from './gradients';
import { type LayerVariableLike, isLayerVariable, layerCallPatch } from './layer-patch';
import { followsReluInThisPass, notePremasked } from './relu-mask';

/** The tfjs whose BatchNormalization layer this mirrors (layers/normalization.js in @tensorflow/tfjs-layers). */
export const MIRRORED_TFJS_LAYERS = '4.22.0';

/** BatchNormalization's fields the fused call reads, as tfjs-layers 4.22 keeps them. */
export interface BatchNormInternals {
  axis: number;
  momentum: number;
  epsilon: number;
  center: boolean;
  scale: boolean;
  gamma: LayerVariableLike | null;
  beta: LayerVariableLike | null;
  movingMean: LayerVariableLike;
  movingVariance: LayerVariableLike;
}

/**
 * The gradient kernel a backend registers to get the fused call: inputs dy, x, mean, variance, scale (the last three
 * one value per channel, channels last), attribute varianceEpsilon; outputs [dx, dscale, doffset]
 * (batchNormGradCoefficients says how).
 */
export const BATCH_NORM_TRAIN_GRAD = 'BatchNormTrainGrad';

/**
 * Optional, for the forward pass: input x (channels last), outputs [mean, variance] per channel, the biased variance
 * as tfjs's moments() gives it. Without it the forward pass runs tfjs's moments ops.
 */
export const BATCH_NORM_MOMENTS = 'BatchNormMoments';

/**
 * Optional: BATCH_NORM_TRAIN_GRAD for an x that is a ReLU's output, outputs [dx * step(x), dscale, doffset, the
 * per-channel sums of dx * step(x)]: the ReLU layer before takes its mask and bias gradient from it (relu-mask.ts).
 */
export const BATCH_NORM_TRAIN_GRAD_RELU = 'BatchNormTrainGradRelu';

/**
 * Optional, for the training call paired with the 2x2 / 2 max pooling after it (train-pairs.ts): inputs x, mean,
 * variance, scale, offset, attrs varianceEpsilon, poolSize, poolStrides, poolPad; outputs [maxPool(batchNorm(x)),
 * its codes (int32, two 16-bit codes an element: accel/onednn/src/pool.h)]. A backend that registers it takes,
 * in BATCH_NORM_TRAIN_GRAD and BATCH_NORM_TRAIN_GRAD_RELU, a further input `codes` (these), with attrs inputShape (x's)
 * and the pooling's: dy is then the pooling's gradient, and the kernel computes MaxPoolGrad's dx from it and the
 * codes as it reads it, instead of reading one the size of x.
 */
export const BATCH_NORM_MAX_POOL_TRAIN = 'BatchNormMaxPoolTrain';

/** A max pooling's attributes as the paired kernels take them. */
export interface PoolingAttrs {
  poolSize: [number, number];
  poolStrides: [number, number];
  poolPad: string;
}

/** Why `layer` lacks the layout the fused call relies on; undefined when it has it. */
export function batchNormLayoutProblem(layer: unknown): string | undefined {
  const o = layer as Partial<Record<keyof BatchNormInternals, unknown>>;
  for (const key of ['axis', 'momentum', 'epsilon'] as const) {
    if (typeof o[key] !== 'number') return `${key} is not a number`;
  }
  for (const key of ['center', 'scale'] as const) {
    if (typeof o[key] !== 'boolean') return `${key} is not a boolean`;
  }
  for (const key of ['movingMean', 'movingVariance'] as const) {
    if (!isLayerVariable(o[key])) return `${key} is not a layer variable`;
  }
  return undefined;
}

function takesOver(layer: unknown, x: tf.Tensor, kwargs: Record<string, unknown> | undefined): boolean {
  if (kwargs?.training !== true || !activeBackendHas(BATCH_NORM_TRAIN_GRAD)) return false;
  if (x.dtype !== 'float32' || x.rank < 2 || batchNormLayoutProblem(layer)) return false;
  const bn = layer as BatchNormInternals;
  return (bn.axis === -1 || bn.axis === x.rank - 1) && bn.center && bn.scale && isLayerVariable(bn.gamma) && isLayerVariable(bn.beta);
}

/** tfjs's doMovingAverage: variable <- variable - (variable - value) * (1 - momentum). */
function movingAverage(variable: LayerVariableLike, value: tf.Tensor, momentum: number): void {
  tf.tidy(() => {
    const current = variable.read();
    variable.write(tf.sub(current, tf.mul(tf.sub(current, value), 1 - momentum)));
  });
}

/** tfjs's moments(): the mean, and the biased variance around it. */
function tfjsMoments(x: tf.Tensor, axes: number[]): [tf.Tensor, tf.Tensor] {
  const mean = tf.mean(x, axes);
  return [mean, tf.mean(tf.squaredDifference(x, mean), axes)];
}

/**
 * y = batchNorm(x) with the batch's statistics, differentiated in closed form; also returns the statistics. With
 * `pooling`, y is its max pooling instead (BATCH_NORM_MAX_POOL_TRAIN): the batch-norm's output is never written, and
 * the gradient kernel reads the pooling's dy and codes instead of MaxPoolGrad's dx, which read that output back.
 */
function trainingBatchNorm(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  epsilon: number,
  pooling?: PoolingAttrs,
): { y: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor } {
  const axes = x.shape.slice(0, -1).map((_, i) => i);
  // After a fused conv + bias + ReLU layer, its ReLU mask is taken here too (relu-mask.ts).
  const maskRelu = activeBackendHas(BATCH_NORM_TRAIN_GRAD_RELU) && followsReluInThisPass(x);
  let stats: { mean: tf.Tensor; variance: tf.Tensor } | undefined;
  const op = tf.customGrad((...args: Array<tf.Tensor | ((saved: tf.Tensor[]) => void)>) => {
    const [input, scale, offset] = args as tf.Tensor[];
    const save = args[3] as (saved: tf.Tensor[]) => void;
    // tfjs's moments(): the biased variance around the (non-differentiated) mean; in one pass where the backend has
    // BATCH_NORM_MOMENTS, instead of a mean, a squared difference written out and a second mean.
    const [mean, variance] = activeBackendHas(BATCH_NORM_MOMENTS)
      ? (tf.engine().runKernel(BATCH_NORM_MOMENTS, { x: input }) as tf.Tensor[])
      : tfjsMoments(input, axes);
    stats = { mean: tf.keep(mean), variance: tf.keep(variance) };
    const engine = tf.engine();
    let value: tf.Tensor;
    if (pooling) {
      const inputs = { x: input, mean, variance, scale, offset };
      const [pooled, codes] = engine.runKernel(BATCH_NORM_MAX_POOL_TRAIN, inputs, { varianceEpsilon: epsilon, ...pooling }) as tf.Tensor[];
      save([input, mean, variance, scale, codes]);
      value = pooled;
    } else {
      save([input, mean, variance, scale]);
      value = tf.batchNorm(input, mean, variance, offset, scale, epsilon);
    }
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, m, v, s, codes] = saved;
        const kernel = maskRelu ? BATCH_NORM_TRAIN_GRAD_RELU : BATCH_NORM_TRAIN_GRAD;
        const inputs = { dy, x: xs, mean: m, variance: v, scale: s, ...(codes && { codes }) };
        const attrs = { varianceEpsilon: epsilon, ...(codes && { inputShape: xs.shape, ...pooling }) };
        const grads = engine.runKernel(kernel, inputs, attrs) as tf.Tensor[];
        if (!maskRelu) return grads;
        const [dx, dScale, dOffset, sums] = grads;
        notePremasked(dx, xs, sums);
        return [dx, dScale, dOffset];
      },
    };
  });
  const y = op(x, gamma, beta) as tf.Tensor;
  return { y, ...stats! };
}

/**
 * What the backends' gradient kernels share: from the per-channel sums S1 = sum dy and S2 = sum dy (x - mean)
 * (sums = S1 | S2), the closed form dx = a dy + b (x - mean) + k per channel, with a = s r, b = -s r^3 S2 / n,
 * k = -s r S1 / n (coef = a | b | k), and dscale = r S2, doffset = S1; r = 1 / sqrt(variance + eps), s = scale,
 * n = the values per channel.
 */
export function batchNormGradCoefficients(
  sums: ArrayLike<number>,
  variance: ArrayLike<number>,
  scale: ArrayLike<number>,
  epsilon: number,
  n: number,
): { coef: Float32Array; dScale: Float32Array; dOffset: Float32Array } {
  const channels = variance.length;
  const eps = Math.fround(epsilon);
  const coef = new Float32Array(3 * channels);
  const dScale = new Float32Array(channels);
  const dOffset = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    const r = 1 / Math.sqrt(Math.fround(variance[c] + eps));
    const [s1, s2] = [sums[c], sums[channels + c]];
    coef[c] = scale[c] * r;
    coef[channels + c] = (-scale[c] * r * r * r * s2) / n;
    coef[2 * channels + c] = (-scale[c] * r * s1) / n;
    dScale[c] = r * s2;
    dOffset[c] = s1;
  }
  return { coef, dScale, dOffset };
}

/** The layer's training call (with `pooling`, followed by that max pooling): its output, and its moving statistics updated. */
function trainingCall(bn: BatchNormInternals, x: tf.Tensor, pooling?: PoolingAttrs): tf.Tensor {
  return tf.tidy(() => {
    const { y, mean, variance } = trainingBatchNorm(x, bn.gamma!.read(), bn.beta!.read(), bn.epsilon, pooling);
    try {
      movingAverage(bn.movingMean, mean, bn.momentum);
      movingAverage(bn.movingVariance, variance, bn.momentum);
    } finally {
      tf.dispose([mean, variance]);
    }
    return y;
  });
}

const patch = layerCallPatch(
  () => tf.layers.batchNormalization({}),
  (layer, x, kwargs) => (takesOver(layer, x, kwargs) ? trainingCall(layer as BatchNormInternals, x) : undefined),
);

/**
 * The layer's training call followed by a 2x2 / 2 max pooling `pooling`, as one kernel (train-pairs.ts asks), where the
 * fused call takes the layer and the backend has the paired kernels; undefined otherwise.
 */
export function batchNormMaxPoolTraining(layer: unknown, x: tf.Tensor, kwargs: Record<string, unknown>, pooling: PoolingAttrs) {
  const fits = activeBackendHas(BATCH_NORM_MAX_POOL_TRAIN) && patch.installed() && x.rank === 4 && (x.shape[3] ?? 0) % 16 === 0;
  if (!fits || !takesOver(layer, x, kwargs)) return undefined;
  return trainingCall(layer as BatchNormInternals, x, pooling);
}

/** Puts the fused training call in place of tfjs's BatchNormalization.call (idempotent). */
export const installFusedBatchNorm = (): void => patch.install();
/** Restores tfjs's own BatchNormalization.call. */
export const uninstallFusedBatchNorm = (): void => patch.uninstall();
export const fusedBatchNormInstalled = (): boolean => patch.installed();
