/** Tiny synthetic images and a tiny model, so training tests take seconds on the cpu backend. */
import * as tf from '@tensorflow/tfjs';
import type { DecodedImages, ImageRecord } from '../src/types';
import { makeRng } from '../src/random';

/** Class 1 images carry a bright blob in the left half, class 0 in the right half; plus noise. */
export function syntheticImages(count: number, size = 16, seed = 1, positiveFraction = 0.5): DecodedImages {
  const rng = makeRng(seed);
  const pixels = new Uint8Array(count * size * size);
  const labels = new Uint8Array(count);
  const records: ImageRecord[] = [];
  for (let i = 0; i < count; i++) {
    const label = i < Math.round(count * positiveFraction) ? 1 : 0;
    labels[i] = label;
    const cx = label ? size * 0.3 : size * 0.7;
    const cy = size * (0.3 + 0.4 * rng());
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const d2 = (x - cx) ** 2 + (y - cy) ** 2;
        const v = 40 + 160 * Math.exp(-d2 / (size * 0.8)) + 40 * rng();
        pixels[i * size * size + y * size + x] = Math.min(255, Math.round(v));
      }
    }
    records.push({
      path: `/synthetic/${label ? 'PNEUMONIA' : 'NORMAL'}/img${i}.png`,
      label: label ? 'PNEUMONIA' : 'NORMAL',
      patient: `p${i}`,
      source: 'train',
    });
  }
  return { records, size, pixels, labels, skipped: [] };
}

/**
 * Conv + batch-norm + dropout + dense: exercises the training-mode layers without the cost of the real model.
 * The dropout seed makes tfjs draw the same mask on every call, which keeps runs bit-for-bit reproducible
 * (the resume test relies on that); it is not how a real model should set up dropout.
 */
export function tinyModel(size = 16, seed = 7): tf.LayersModel {
  const input = tf.input({ shape: [size, size, 1] });
  let x = tf.layers
    .conv2d({ filters: 4, kernelSize: 3, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  x = tf.layers.dropout({ rate: 0.2, seed: seed + 1 }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers
    .dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 2 }) })
    .apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

export async function weightsOf(model: tf.LayersModel): Promise<Float32Array[]> {
  return Promise.all(model.getWeights().map(async (w) => (await w.data()) as Float32Array));
}
