/**
 * The fused training batch-norm (src/accel/fused/batchnorm.ts) replaces tfjs-layers' BatchNormalization.prototype.call
 * and reads the layer's fields. These tests fail when a tfjs upgrade changes what it relies on: the layer's layout,
 * and the results. With the patch, a training step on `native` and on `wasm` (each with its own gradient kernel) must
 * give tfjs's outputs, gradients (input, gamma, beta, and the weights before the layer) and moving statistics, both
 * against tfjs's own method on that backend and against the cpu backend. The native half needs the addon (skipped,
 * visibly, when it is not built).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { expectCloseToScale } from './close-arrays';
import { loadNativeAddon, tryRegisterNative } from '../src/accel/onednn';
import { startWasmBackend } from '../src/accel/wasm/setup';
import {
  MIRRORED_TFJS_LAYERS,
  batchNormLayoutProblem,
  fusedBatchNormInstalled,
  installFusedBatchNorm,
  uninstallFusedBatchNorm,
} from '../src/accel/fused/batchnorm';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[batch-norm patch tests skipped] ${skipWhy}`);
const onTfjs = `tfjs ${tf.version_layers}; src/accel/fused/batchnorm.ts mirrors tfjs-layers ${MIRRORED_TFJS_LAYERS}`;
const FUSED_KERNEL = 'BatchNormTrainGrad';

/**
 * conv -> batch-norm (momentum 0.6, so one step moves the statistics visibly) -> dense: gradients reach the conv.
 * wasm's kernel takes 8 channels with its SIMD loops and 5 with plain loops.
 */
function net(channels: number): tf.LayersModel {
  const input = tf.input({ shape: [9, 9, 2] });
  let x = tf.layers
    .conv2d({ filters: channels, kernelSize: 3, padding: 'same', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers
    .batchNormalization({
      momentum: 0.6,
      gammaInitializer: tf.initializers.randomUniform({ minval: 0.5, maxval: 1.5, seed: 4 }),
      betaInitializer: tf.initializers.randomUniform({ minval: -0.5, maxval: 0.5, seed: 5 }),
    })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: 6 }) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

interface StepResult {
  output: Float32Array;
  grads: Float32Array[];
  /** Every weight after the step: the moving mean and variance are among them. */
  weights: Float32Array[];
  kernels: string[];
}

/** One forward (training mode by default) and backward pass on `backend`, as host arrays, with the kernels it ran. */
async function trainingStep(backend: string, training = true, channels = 5): Promise<StepResult> {
  await tf.setBackend(backend);
  const model = net(channels);
  const rng = makeRng(8);
  const x = tf.tensor4d(
    Float32Array.from({ length: 4 * 9 * 9 * 2 }, () => rng() * 3 + 1),
    [4, 9, 9, 2],
  );
  const weights = model.trainableWeights.map((w) => w.read() as tf.Variable);
  let output: Float32Array = new Float32Array(0);
  let grads: Float32Array[] = [];
  const profile = await tf.profile(() => {
    const { grads: g, value } = tf.variableGrads(() => {
      const y = model.apply(x, { training }) as tf.Tensor;
      output = y.dataSync() as Float32Array;
      // A weighted sum, so every output position pulls its own way.
      return tf.sum(tf.mul(y, tf.tensor1d([1, -2, 0.5, 3]).reshape([4, 1]))) as tf.Scalar;
    }, weights);
    grads = weights.map((w) => g[w.name].dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(g)]);
  });
  const result = {
    output,
    grads,
    weights: model.getWeights().map((w) => w.dataSync() as Float32Array),
    kernels: profile.kernelNames,
  };
  x.dispose();
  model.dispose();
  return result;
}

const backends = [
  { backend: 'native', skip: skipWhy, start: async () => expect(tryRegisterNative()).toMatchObject({ ok: true }) },
  { backend: 'wasm', skip: '', start: async () => void (await startWasmBackend()) },
];

describe.each(backends)(`fused training batch-norm on $backend (${onTfjs})`, ({ backend, skip, start }) => {
  beforeAll(async () => {
    if (!skip) await start();
  });
  afterAll(() => installFusedBatchNorm());

  it.skipIf(Boolean(skip))('is installed with the backend, and a built layer has the fields it reads', () => {
    expect(fusedBatchNormInstalled()).toBe(true);
    const layer = tf.layers.batchNormalization({});
    layer.build([2, 3, 3, 4]);
    expect(batchNormLayoutProblem(layer)).toBeUndefined();
    expect(batchNormLayoutProblem({ axis: -1, momentum: 0.9, epsilon: 1e-3, center: true, scale: true })).toMatch(/movingMean/);
  });

  it.skipIf(Boolean(skip)).each([5, 8, 16])(
    "gives tfjs's outputs, gradients and moving statistics with %i channels (against tfjs's method on the backend, and cpu)",
    async (channels) => {
      installFusedBatchNorm();
      const fused = await trainingStep(backend, true, channels);
      uninstallFusedBatchNorm();
      const tfjsMethod = await trainingStep(backend, true, channels);
      const cpu = await trainingStep('cpu', true, channels);
      installFusedBatchNorm();

      expect(fused.kernels).toContain(FUSED_KERNEL);
      expect(fused.kernels).toContain('BatchNormMoments');
      expect(tfjsMethod.kernels).not.toContain(FUSED_KERNEL);
      for (const reference of [tfjsMethod, cpu]) {
        expectCloseToScale([fused.output], [reference.output], 1e-5);
        expectCloseToScale(fused.grads, reference.grads, 1e-4);
        expectCloseToScale(fused.weights, reference.weights, 1e-5);
      }
      // The step moved the moving statistics (momentum 0.6), so comparing them above compared something.
      const movingMean = fused.weights[3];
      expect(Math.max(...Array.from(movingMean, Math.abs))).toBeGreaterThan(0.01);
    },
  );

  it.skipIf(Boolean(skip)).each([5, 8])(
    'takes the statistics in one pass, accurate around a large mean (%i channels, against float64)',
    async (channels) => {
      await tf.setBackend(backend);
      const rng = makeRng(12);
      const n = 4 * 30 * 30; // 3600 rows: several float32 partial sums on wasm
      const values = Float32Array.from({ length: n * channels }, (_, i) => 1000 + (i % channels) + (rng() * 2 - 1) * 0.5);
      const x = tf.tensor4d(values, [4, 30, 30, channels]);
      const [mean, variance] = tf.engine().runKernel('BatchNormMoments', { x }) as tf.Tensor[];
      const [m, v] = [await mean.data(), await variance.data()];
      tf.dispose([x, mean, variance]);
      for (let k = 0; k < channels; k++) {
        let s = 0;
        for (let r = 0; r < n; r++) s += values[r * channels + k];
        const mu = s / n;
        let q = 0;
        for (let r = 0; r < n; r++) q += (values[r * channels + k] - mu) ** 2;
        expect(Math.abs(m[k] - mu) / mu).toBeLessThan(1e-7);
        expect(Math.abs(v[k] - q / n) / (q / n)).toBeLessThan(1e-4); // variance 1/12 under a mean of 1000
      }
    },
  );

  it.skipIf(Boolean(skip))("leaves inference and other backends to tfjs's method", async () => {
    installFusedBatchNorm();
    const inference = await trainingStep(backend, false);
    const onCpu = await trainingStep('cpu');
    expect(inference.kernels).not.toContain(FUSED_KERNEL);
    expect(onCpu.kernels).not.toContain(FUSED_KERNEL);
    uninstallFusedBatchNorm();
    const tfjsInference = await trainingStep(backend, false);
    installFusedBatchNorm();
    expect(Array.from(inference.output)).toEqual(Array.from(tfjsInference.output));
  });
});
