/**
 * What training minimizes: binary cross-entropy on sigmoid probabilities, optionally weighted per class, with
 * label smoothing, on batches optionally blended by mixup. Pure tensor functions; the step (step.ts) puts them
 * together.
 */
import * as tf from '@tensorflow/tfjs';
import { shuffled, type Rng } from '../random';

/** Per-class loss weights [normal, pneumonia]: n / (2 * n_c); with a class missing there is nothing to balance: [1, 1]. */
export function balancedClassWeights(labels: ArrayLike<number>): [number, number] {
  let positives = 0;
  for (let i = 0; i < labels.length; i++) positives += labels[i] ? 1 : 0;
  const negatives = labels.length - positives;
  if (positives === 0 || negatives === 0) return [1, 1];
  return [labels.length / (2 * negatives), labels.length / (2 * positives)];
}

/** Probabilities are clipped to [EPS, 1 - EPS], like Keras, so log(0) never occurs. */
export const EPS = 1e-7;

/**
 * Mean binary cross-entropy of sigmoid probabilities; with class weights each sample's term is scaled by its
 * class weight (the Keras `class_weight` definition: sum(w_i * bce_i) / batch size).
 */
export function weightedBinaryCrossEntropy(labels: tf.Tensor, probs: tf.Tensor, classWeights?: readonly [number, number]): tf.Scalar {
  return tf.tidy(() => {
    const p = tf.clipByValue(probs.reshape([-1]), EPS, 1 - EPS);
    const y = labels.reshape([-1]).toFloat();
    const perItem = tf.neg(tf.add(tf.mul(y, tf.log(p)), tf.mul(tf.sub(1, y), tf.log(tf.sub(1, p)))));
    if (!classWeights) return tf.mean(perItem) as tf.Scalar;
    const w = tf.add(tf.mul(y, classWeights[1]), tf.mul(tf.sub(1, y), classWeights[0]));
    return tf.mean(tf.mul(perItem, w)) as tf.Scalar;
  });
}

/** y * (1 - eps) + eps / 2: the binary form of Keras's label_smoothing. */
export function smoothLabels(labels: tf.Tensor, eps: number): tf.Tensor {
  if (!eps) return labels;
  return tf.tidy(() => tf.add(tf.mul(labels.toFloat(), 1 - eps), eps / 2));
}

/** A Beta(a, a) draw via two Gamma(a) draws (Marsaglia-Tsang; a < 1 boosted by U^(1/a)). */
export function sampleBeta(alpha: number, rng: Rng): number {
  const gamma = (a: number): number => {
    if (a < 1) return gamma(a + 1) * Math.pow(rng(), 1 / a);
    const d = a - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        // Box-Muller normal
        x = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = rng();
      if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  };
  const g1 = gamma(alpha);
  const g2 = gamma(alpha);
  return g1 / (g1 + g2);
}

/**
 * mixup (Zhang et al. 2018): the batch blended with a shuffled copy, lambda ~ Beta(alpha, alpha) taken as
 * max(lambda, 1 - lambda) so each blend stays closer to its own image; labels blend the same way. Caller disposes.
 */
export function mixupBatch(xs: tf.Tensor4D, ys: tf.Tensor, alpha: number, rng: Rng): { xs: tf.Tensor4D; ys: tf.Tensor; lambda: number } {
  const raw = sampleBeta(alpha, rng);
  const lambda = Math.max(raw, 1 - raw);
  const order = shuffled(
    Array.from({ length: xs.shape[0] }, (_, i) => i),
    rng,
  );
  return tf.tidy(() => {
    const index = tf.tensor1d(order, 'int32');
    const mixedXs = tf.add(tf.mul(xs, lambda), tf.mul(tf.gather(xs, index), 1 - lambda)) as tf.Tensor4D;
    const y = ys.toFloat();
    const mixedYs = tf.add(tf.mul(y, lambda), tf.mul(tf.gather(y, index), 1 - lambda));
    return { xs: mixedXs, ys: mixedYs, lambda };
  });
}
