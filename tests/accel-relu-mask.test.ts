/**
 * ReLU's mask taken by the layer after a fused conv + bias + ReLU layer (src/accel/fused/relu-mask.ts): a max
 * pooling (MaxPoolGradRelu) or a training batch-norm (BatchNormTrainGradRelu), on `native` and `wasm`. A training step must give
 * tfjs's gradients, and the masked gradient must never be handed out as the gradient of the ReLU output itself:
 * the cases below ask for exactly that, with ReLU outputs that are zero over whole pooling windows (where the masked
 * and the true gradient differ). The `native` part needs the addon (skipped, visibly, when it is not built).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { expectCloseToScale } from './close-arrays';
import { loadNativeAddon, tryRegisterNative } from '../src/accel/onednn';
import { startWasmBackend } from '../src/accel/wasm/setup';
import { installFusedConvLayers, uninstallFusedConvLayers } from '../src/accel/fused/conv-layers';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[ReLU mask tests skipped] ${skipWhy}`);

const init = (seed: number) => tf.initializers.glorotUniform({ seed });
// Biases below zero, so some pooling windows are all zero after the ReLU.
const bias = (seed: number) => tf.initializers.randomUniform({ minval: -0.6, maxval: 0.1, seed });

/** conv + ReLU -> max pool -> separable conv + ReLU -> batch-norm -> max pool -> dense (the seed model's pattern). */
function net(): tf.LayersModel {
  const input = tf.input({ shape: [12, 12, 1] });
  let x = tf.layers
    .conv2d({ filters: 8, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(1), biasInitializer: bias(2) })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers
    .separableConv2d({
      filters: 16,
      kernelSize: 3,
      padding: 'same',
      activation: 'relu',
      depthwiseInitializer: init(3),
      pointwiseInitializer: init(4),
      biasInitializer: bias(5),
    })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ momentum: 0.9 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, kernelInitializer: init(6) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

function images(n: number, side: number, channels = 1): tf.Tensor4D {
  const rng = makeRng(9);
  return tf.tensor4d(
    Float32Array.from({ length: n * side * side * channels }, () => rng() * 2 - 0.5),
    [n, side, side, channels],
  );
}

async function trainingStep(backend: string): Promise<{ grads: Float32Array[]; kernels: string[] }> {
  await tf.setBackend(backend);
  const model = net();
  const x = images(4, 12);
  const weights = model.trainableWeights.map((w) => w.read() as tf.Variable);
  let grads: Float32Array[] = [];
  const profile = await tf.profile(() => {
    const { grads: g, value } = tf.variableGrads(() => {
      const y = model.apply(x, { training: true }) as tf.Tensor;
      return tf.sum(tf.mul(y, tf.tensor2d([[1], [-2], [0.5], [3]]))) as tf.Scalar;
    }, weights);
    grads = weights.map((w) => g[w.name].dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(g)]);
  });
  x.dispose();
  model.dispose();
  return { grads, kernels: profile.kernels.map((k) => k.name) };
}

/** A conv + ReLU layer whose output has all-zero 2x2 windows, and a max pool layer. */
function convAndPool(): { conv: tf.layers.Layer; pool: tf.layers.Layer } {
  const conv = tf.layers.conv2d({
    filters: 4,
    kernelSize: 3,
    padding: 'same',
    activation: 'relu',
    kernelInitializer: init(7),
    biasInitializer: tf.initializers.constant({ value: -0.3 }),
  });
  conv.build([null, 8, 8, 1]);
  return { conv, pool: tf.layers.maxPooling2d({ poolSize: 2 }) };
}

/** The gradient of sum(pool(y) * w) with respect to y itself, on `backend`, y = conv(x) made as `make` says. */
async function gradientOfReluOutput(backend: string, how: 'outside' | 'nested' | 'two consumers'): Promise<Float32Array> {
  await tf.setBackend(backend);
  const { conv, pool } = convAndPool();
  const x = images(2, 8);
  const weights = tf.tensor4d(
    Float32Array.from({ length: 2 * 4 * 4 * 4 }, (_, i) => (i % 5) - 2),
    [2, 4, 4, 4],
  );
  const loss = (y: tf.Tensor) => tf.sum(tf.mul(pool.apply(y) as tf.Tensor, weights));
  let result: Float32Array;
  if (how === 'outside') {
    // y made before tf.grad's forward pass: y is one of its xs.
    const y = conv.apply(x) as tf.Tensor;
    result = tf.tidy(() => tf.grad(loss)(y).dataSync() as Float32Array);
    y.dispose();
  } else if (how === 'nested') {
    // y made in an outer forward pass, its gradient asked for by an inner tf.grad.
    result = new Float32Array(0);
    const kernel = conv.getWeights()[0] as tf.Variable;
    const { value, grads } = tf.variableGrads(() => {
      const y = conv.apply(x) as tf.Tensor;
      result = tf.grad(loss)(y).dataSync() as Float32Array;
      return tf.sum(y);
    }, [kernel]);
    tf.dispose([value, ...Object.values(grads)]);
  } else {
    // y feeds the pool and a second consumer: the gradients are added before the conv layer's.
    const kernel = conv.getWeights()[0] as tf.Variable;
    const { value, grads } = tf.variableGrads(() => {
      const y = conv.apply(x) as tf.Tensor;
      return tf.add(loss(y), tf.sum(tf.mul(y, 0.25)));
    }, [kernel]);
    result = grads[kernel.name].dataSync() as Float32Array;
    tf.dispose([value, ...Object.values(grads)]);
  }
  tf.dispose([x, weights]);
  conv.weights.forEach((w) => w.dispose());
  return result;
}

const backends = [
  { backend: 'native', skip: skipWhy, start: async () => expect(tryRegisterNative()).toMatchObject({ ok: true }) },
  { backend: 'wasm', skip: '', start: async () => void (await startWasmBackend()) },
];

describe.each(backends)('the ReLU mask taken by the next layer, on $backend', ({ backend, skip, start }) => {
  beforeAll(async () => {
    if (!skip) await start();
  });
  afterAll(async () => {
    installFusedConvLayers();
    await tf.setBackend('cpu');
  });

  it.skipIf(Boolean(skip))(
    "a training step gives tfjs's gradients, with the pool's and the batch-norm's masked gradients in use",
    async () => {
      const fused = await trainingStep(backend);
      uninstallFusedConvLayers();
      const tfjsMethod = await trainingStep(backend);
      const cpu = await trainingStep('cpu');
      installFusedConvLayers();
      expect(fused.kernels).toContain('BatchNormTrainGradRelu');
      // Neither fused layer needed its own mask pass; the second max pool follows a batch-norm and stays tfjs's.
      expect(fused.kernels).not.toContain('ReluGradChannelSums');
      expect(fused.kernels.filter((k) => k === 'MaxPoolGradRelu')).toHaveLength(1);
      expect(tfjsMethod.kernels).not.toContain('MaxPoolGradRelu');
      expect(tfjsMethod.kernels).not.toContain('BatchNormTrainGradRelu');
      for (const reference of [tfjsMethod, cpu]) expectCloseToScale(fused.grads, reference.grads, 1e-5);
    },
  );

  it.skipIf(Boolean(skip)).each(['outside', 'nested', 'two consumers'] as const)(
    'the gradient of a ReLU output itself stays unmasked (y made %s)',
    async (how) => {
      const fused = await gradientOfReluOutput(backend, how);
      const cpu = await gradientOfReluOutput('cpu', how);
      expectCloseToScale([fused], [cpu], 1e-5);
      if (how !== 'two consumers') {
        // The case matters: some all-zero windows hand their gradient to a zero-valued tap, which a mask would drop.
        expect(fused.some((v) => v !== 0)).toBe(true);
      }
    },
  );
});
