/**
 * Per-image intensity normalization, as the model's first layer, so every caller (training, evaluation, predict,
 * Grad-CAM, the web page) feeds the same raw [0,1] pixels and the saved model carries its own preprocessing.
 *
 * Why: films from different devices and years differ in exposure (the official test's earlier normal films are
 * about 10 gray levels brighter on average than train's), and a CNN happily learns exposure as a class cue.
 * - `standardize`: each image to zero mean and unit variance (tf.image.per_image_standardization).
 * - `equalize`: histogram equalization over 256 gray levels; each pixel becomes its gray level's share of the
 *   image's pixels at or below it, so any monotone exposure curve maps to the same image.
 */
import * as tf from '@tensorflow/tfjs';

export type InputNormalization = 'none' | 'standardize' | 'equalize';
export const INPUT_NORMALIZATIONS: readonly InputNormalization[] = ['none', 'standardize', 'equalize'];

/**
 * The kernel a backend may register to standardize a batch in one pass (input x, channels last; output each image
 * [h, w, c] to zero mean and unit variance, as standardizeImagesWithOps computes it): `native` does
 * (accel/onednn/src/elementwise.cc). Elsewhere the six tfjs ops run.
 */
export const STANDARDIZE_IMAGES = 'StandardizeImages';

/** Each image [h, w, c] of a batch to zero mean and unit variance (the std floored at 1/sqrt(pixels), as TF does). */
export function standardizeImages(x: tf.Tensor4D): tf.Tensor4D {
  if (!tf.getKernel(STANDARDIZE_IMAGES, tf.getBackend())) return standardizeImagesWithOps(x);
  return tf.engine().runKernel(STANDARDIZE_IMAGES, { x }) as tf.Tensor4D;
}

const IMAGE_AXES = [1, 2, 3];

/** Each image's mean, standard deviation, and the floor TF puts under it (1/sqrt(pixels)); shaped [n, 1, 1, 1]. */
function imageStats(x: tf.Tensor): { mean: tf.Tensor; sd: tf.Tensor; floor: number } {
  const [, h, w, c] = x.shape;
  const { mean, variance } = tf.moments(x, IMAGE_AXES, true);
  return { mean, sd: tf.sqrt(variance), floor: 1 / Math.sqrt(h * w * c) };
}

/** standardizeImages with tfjs ops: the reference, and the path of backends without the kernel. */
export function standardizeImagesWithOps(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const { mean, sd, floor } = imageStats(x);
    return tf.div(tf.sub(x, mean), tf.maximum(sd, floor)) as tf.Tensor4D;
  });
}

// The kernel's gradient, for anyone differentiating through the layer (training does not: images are not
// variables). With y = (x - mean) / std: dx = (dy - mean(dy) - y mean(dy y)) / std, without the last term where
// the std is the floor (a constant then).
tf.registerGradient({
  kernelName: STANDARDIZE_IMAGES,
  inputsToSave: ['x'],
  outputsToSave: [true],
  gradFunc: (dy, [x, y]) => ({
    x: () =>
      tf.tidy(() => {
        const { sd, floor } = imageStats(x);
        const notFloored = tf.cast(tf.greater(sd, floor), 'float32');
        const g = dy as tf.Tensor;
        const centred = tf.sub(g, tf.mean(g, IMAGE_AXES, true));
        const along = tf.mul(tf.mul(y, tf.mean(tf.mul(g, y), IMAGE_AXES, true)), notFloored);
        return tf.div(tf.sub(centred, along), tf.maximum(sd, floor));
      }),
  }),
});

const LEVELS = 256;

/**
 * Histogram equalization per image of a batch of [0,1] grayscale images, returning values in (0,1]: the fraction
 * of the image's pixels whose gray level (x quantized to 256 levels) is at or below each pixel's.
 *
 * In JS on the host: a 256-bin histogram is a few microseconds per image here, while the tensor-op version
 * (denseBincount, cumsum, batched gather) took about 200 ms per batch of 32 at 150x150 on the cpu kernels. The input
 * needs no gradient, so leaving the tape costs nothing.
 */
export function equalizeImages(x: tf.Tensor4D): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const pixels = h * w * c;
  const src = x.dataSync();
  const out = new Float32Array(src.length);
  const levels = new Uint8Array(pixels);
  const cdf = new Float32Array(LEVELS);
  for (let b = 0; b < n; b++) {
    const start = b * pixels;
    cdf.fill(0);
    for (let i = 0; i < pixels; i++) {
      const v = src[start + i];
      const level = Math.round((v < 0 ? 0 : v > 1 ? 1 : v) * (LEVELS - 1));
      levels[i] = level;
      cdf[level]++;
    }
    for (let l = 1; l < LEVELS; l++) cdf[l] += cdf[l - 1];
    for (let i = 0; i < pixels; i++) out[start + i] = cdf[levels[i]] / pixels;
  }
  return tf.tensor4d(out, [n, h, w, c], 'float32');
}

function normalize(x: tf.Tensor4D, mode: InputNormalization): tf.Tensor4D {
  if (mode === 'standardize') return standardizeImages(x);
  if (mode === 'equalize') return equalizeImages(x);
  return x.clone();
}

interface NormalizationArgs {
  mode: InputNormalization;
  name?: string;
}

/** The layer; registered for (de)serialization, so saved models load wherever this module is imported. */
export class PerImageNormalization extends tf.layers.Layer {
  static className = 'PerImageNormalization';
  readonly mode: InputNormalization;

  constructor(args: NormalizationArgs) {
    super({ name: args.name, trainable: false });
    if (!INPUT_NORMALIZATIONS.includes(args.mode)) {
      throw new Error(`Unknown input normalization '${args.mode}'; use ${INPUT_NORMALIZATIONS.join(', ')}.`);
    }
    this.mode = args.mode;
  }

  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return normalize(x as tf.Tensor4D, this.mode);
  }

  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), mode: this.mode };
  }
}
tf.serialization.registerClass(PerImageNormalization);

export function parseInputNormalization(spec: string): InputNormalization {
  const s = spec.trim().toLowerCase() as InputNormalization;
  if (!INPUT_NORMALIZATIONS.includes(s)) {
    throw new Error(`--normalize '${spec}' is not understood; use ${INPUT_NORMALIZATIONS.join(', ')}.`);
  }
  return s;
}
