/**
 * The `native` backend trains like `cpu`: same gradients for a small conv net (with the seed
 * model's layer types), the same loss curve, and no leaked tensors or memory over many steps.
 * Skipped (visibly) when the addon is not built: `apt-get install libdnnl-dev && npm run build:native`.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { loadNativeAddon, nativeFallbacks, tryRegisterNative } from '../src/accel/onednn';
import { buildModel } from '../src/model';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[native tests skipped] ${skipWhy}`);

/** A scaled-down seed model: conv, separable conv, batch-norm, pooling, dense. */
function tinyNet(seed: number): tf.LayersModel {
  const init = (s: number) => tf.initializers.glorotUniform({ seed: seed + s });
  const input = tf.input({ shape: [12, 12, 1] });
  let x = tf.layers
    .conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(1) })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers
    .separableConv2d({
      filters: 6,
      kernelSize: 3,
      padding: 'same',
      activation: 'relu',
      depthwiseInitializer: init(2),
      pointwiseInitializer: init(3),
    })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = tf.layers
    .conv2d({ filters: 5, kernelSize: 3, strides: 2, padding: 'valid', activation: 'relu', kernelInitializer: init(4) })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  x = tf.layers.dense({ units: 8, activation: 'relu', kernelInitializer: init(5) }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: init(6) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

function batch(seed: number, n: number): { xs: Float32Array; ys: Float32Array } {
  const rng = makeRng(seed);
  const xs = new Float32Array(n * 12 * 12);
  const ys = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    ys[i] = i % 2;
    // Class 1 images are brighter in the centre, so the net has something to learn.
    for (let p = 0; p < 144; p++) {
      const r = Math.floor(p / 12),
        c = p % 12;
      const centre = r > 3 && r < 8 && c > 3 && c < 8 ? 0.6 * ys[i] : 0;
      xs[i * 144 + p] = rng() * 0.5 + centre;
    }
  }
  return { xs, ys };
}

/** Gradients of the loss w.r.t. every trainable weight, as host arrays. */
async function gradients(backend: string): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const model = tinyNet(7);
  const { xs, ys } = batch(3, 6);
  const x = tf.tensor4d(xs, [6, 12, 12, 1]);
  const y = tf.tensor2d(ys, [6, 1]);
  const { grads, value } = tf.variableGrads(
    () => tf.losses.logLoss(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar,
    model.trainableWeights.map((w) => w.read() as tf.Variable),
  );
  const out = await Promise.all(model.trainableWeights.map(async (w) => (await grads[w.read().name].data()) as Float32Array));
  tf.dispose([x, y, value, ...Object.values(grads)]);
  model.dispose();
  return out;
}

async function lossCurve(backend: string, steps: number): Promise<number[]> {
  await tf.setBackend(backend);
  const model = tinyNet(11);
  model.compile({ optimizer: tf.train.adam(0.01), loss: 'binaryCrossentropy' });
  const { xs, ys } = batch(5, 16);
  const x = tf.tensor4d(xs, [16, 12, 12, 1]);
  const y = tf.tensor2d(ys, [16, 1]);
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) losses.push((await model.trainOnBatch(x, y)) as number);
  tf.dispose([x, y]);
  model.dispose();
  return losses;
}

describe.skipIf(Boolean(skipWhy))('native backend trains like cpu', () => {
  it('registers', async () => {
    expect(tryRegisterNative()).toMatchObject({ ok: true });
    await tf.setBackend('native');
    expect(tf.getBackend()).toBe('native');
  });

  it('gives the same weight gradients as cpu for a small conv net', async () => {
    tryRegisterNative();
    const native = await gradients('native');
    const cpu = await gradients('cpu');
    expect(native.length).toBe(cpu.length);
    native.forEach((g, i) => {
      const scale = Math.max(1e-3, ...Array.from(cpu[i], Math.abs));
      const worst = Math.max(...Array.from(g, (v, j) => Math.abs(v - cpu[i][j])));
      expect(worst / scale).toBeLessThan(1e-4);
    });
  });

  it('follows the same loss curve as cpu over a short training run', async () => {
    tryRegisterNative();
    const native = await lossCurve('native', 15);
    const cpu = await lossCurve('cpu', 15);
    native.forEach((l, i) => expect(Math.abs(l - cpu[i])).toBeLessThan(1e-3 * Math.max(1, cpu[i])));
    expect(native[native.length - 1]).toBeLessThan(native[0]); // it did learn
  });

  it('runs the seed model (64x64) without falling back to cpu kernels', async () => {
    tryRegisterNative();
    await tf.setBackend('native');
    const model = buildModel({ variant: 'seed', imageSize: 64, channels: 1, seed: 1 });
    model.compile({ optimizer: tf.train.adam(1e-3), loss: 'binaryCrossentropy' });
    const x = tf.randomUniform([2, 64, 64, 1], 0, 1, 'float32', 1);
    const y = tf.tensor2d([0, 1], [2, 1]);
    const before = nativeFallbacks();
    await model.trainOnBatch(x, y);
    tf.tidy(() => model.predict(x));
    const added = [...nativeFallbacks()].filter(([k, n]) => (before.get(k) ?? 0) !== n).map(([k]) => k);
    expect(added).toEqual([]);
    tf.dispose([x, y]);
    model.dispose();
  });

  it('keeps tensors and memory flat over a few hundred training steps', async () => {
    tryRegisterNative();
    await tf.setBackend('native');
    const model = tinyNet(13);
    const optimizer = tf.train.adam(0.01);
    const { xs, ys } = batch(9, 8);
    const x = tf.tensor4d(xs, [8, 12, 12, 1]);
    const y = tf.tensor2d(ys, [8, 1]);
    const step = () =>
      tf.tidy(() => {
        optimizer.minimize(() => tf.losses.logLoss(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar);
      });
    for (let i = 0; i < 20; i++) step();
    const tensors = tf.memory().numTensors;
    global.gc?.();
    const rss = process.memoryUsage().rss;
    for (let i = 0; i < 200; i++) step();
    global.gc?.();
    expect(tf.memory().numTensors).toBe(tensors);
    // Generous bound: GC timing varies, a leak of every step's activations would not fit.
    expect(process.memoryUsage().rss - rss).toBeLessThan(64 * 1024 * 1024);
    tf.dispose([x, y]);
    optimizer.dispose();
    model.dispose();
  });
});
