/**
 * Prediction with the layer before each max pooling fused into it (src/accel/fused/inference.ts) on `native`: the two
 * kernels against tfjs's ops (bit for bit on native, within rounding on cpu), under every convolution algorithm, and
 * the replaced LayersModel.predict against tfjs's own, with the cases it must leave to tfjs. Skipped, visibly, when
 * the addon is not built.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { expectCloseToScale } from './close-arrays';
import {
  fusedInferenceInstalled,
  installFusedInference,
  loadNativeAddon,
  tryRegisterNative,
  uninstallFusedInference,
  type NativeAddon,
} from '../src/accel/onednn';
import { BATCH_NORM_MAX_POOL, CONV_BIAS_RELU_MAX_POOL } from '../src/accel/fused/inference';
import { buildModel } from '../src/model';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[fused inference tests skipped] ${skipWhy}`);

type Algorithm = Parameters<NativeAddon['setConvAlgorithm']>[0];

/** Values in [-1, 1) (so ReLU and the pooling see both signs), with NaN at the given indices. */
function values(seed: number, n: number, nanAt: number[] = []): Float32Array {
  const rng = makeRng(seed);
  const out = Float32Array.from({ length: n }, () => rng() * 2 - 1);
  for (const i of nanAt) out[i] = NaN;
  return out;
}

const tensor = (shape: number[], seed: number, nanAt: number[] = []) =>
  tf.tensor(
    values(
      seed,
      shape.reduce((a, b) => a * b, 1),
      nanAt,
    ),
    shape,
  );

interface ConvPoolCase {
  name: string;
  x: number[];
  filter: number[];
  strides?: number;
  pad: 'same' | 'valid';
  pool?: { size: number; strides: number; pad: 'same' | 'valid' };
  nanAt?: number[];
}

const HALVING = { size: 2, strides: 2, pad: 'valid' as const };
const convPoolCases: ConvPoolCase[] = [
  // 16 -> 16 channels: our Winograd pools in its output transform. Odd sides leave a last row and column that no
  // window takes, and last tiles 1 to 3 pixels wide; 41 columns are more F(2x2) tiles than one register block.
  { name: '16 -> 16, same, 13x11', x: [2, 13, 11, 16], filter: [3, 3, 16, 16], pad: 'same' },
  { name: '16 -> 16, valid, 12x14', x: [2, 12, 14, 16], filter: [3, 3, 16, 16], pad: 'valid' },
  { name: '16 -> 16, same, 7x41', x: [1, 7, 41, 16], filter: [3, 3, 16, 16], pad: 'same' },
  // NaN spreads over the Winograd tiles around it; pooled as MaxPool pools it (NaN never wins a window).
  { name: '16 -> 16 with NaN', x: [1, 10, 10, 16], filter: [3, 3, 16, 16], pad: 'same', nanAt: [16 * 23 + 5] },
  // A pooling that is not 2x2 / 2: the convolution goes through the scratch buffer, whatever the algorithm.
  { name: '16 -> 16, 3x3 pooling', x: [2, 11, 11, 16], filter: [3, 3, 16, 16], pad: 'same', pool: { size: 3, strides: 2, pad: 'same' } },
  // The one-channel first layer's own kernel, and oneDNN's direct convolution (other channels, stride 2).
  { name: '1 -> 16', x: [2, 9, 12, 1], filter: [3, 3, 1, 16], pad: 'same' },
  { name: '3 -> 8, stride 2', x: [2, 15, 13, 3], filter: [3, 3, 3, 8], strides: 2, pad: 'valid' },
];

function convPoolTfjs(c: ConvPoolCase, x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const p = c.pool ?? HALVING;
  const conv = tf.fused.conv2d({
    x: x as tf.Tensor4D,
    filter: filter as tf.Tensor4D,
    strides: c.strides ?? 1,
    pad: c.pad,
    bias,
    activation: 'relu',
  });
  return tf.maxPool(conv, p.size, p.strides, p.pad);
}

function convPoolFused(c: ConvPoolCase, x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const p = c.pool ?? HALVING;
  const attrs = { strides: c.strides ?? 1, pad: c.pad, poolSize: p.size, poolStrides: p.strides, poolPad: p.pad };
  return tf.engine().runKernel(CONV_BIAS_RELU_MAX_POOL, { x, filter, bias }, attrs) as tf.Tensor;
}

/** tfjs's ops on `backend` and the fused kernel on native, on the same inputs. */
async function convPoolOutputs(c: ConvPoolCase, backend: string) {
  const inputs = () => [tensor(c.x, 1, c.nanAt), tensor(c.filter, 2), tensor([c.filter[3]], 3)];
  await tf.setBackend(backend);
  const reference = tf.tidy(() => convPoolTfjs(c, ...(inputs() as [tf.Tensor, tf.Tensor, tf.Tensor])));
  const expected = { shape: reference.shape, data: Float32Array.from(await reference.data()) };
  reference.dispose();
  await tf.setBackend('native');
  const fused = tf.tidy(() => convPoolFused(c, ...(inputs() as [tf.Tensor, tf.Tensor, tf.Tensor])));
  const actual = { shape: fused.shape, data: Float32Array.from(await fused.data()) };
  fused.dispose();
  return { expected, actual };
}

interface BnPoolCase {
  name: string;
  x: number[];
  pool: { size: number; strides: number; pad: 'same' | 'valid' };
  offsetAndScale: boolean;
}

const bnPoolCases: BnPoolCase[] = [
  { name: '2x2 / 2 over 9x11, 32 channels', x: [2, 9, 11, 32], pool: HALVING, offsetAndScale: true },
  { name: '3x3 / 2, same, 5 channels', x: [3, 8, 7, 5], pool: { size: 3, strides: 2, pad: 'same' }, offsetAndScale: true },
  { name: 'no offset or scale', x: [1, 6, 6, 16], pool: HALVING, offsetAndScale: false },
];

/** Moving statistics and weights for c: variances in [0.2, 2), scales of both signs (a negative one turns maxima into minima). */
function bnInputs(c: BnPoolCase) {
  const channels = c.x[3];
  return {
    x: tensor(c.x, 4, [7]),
    mean: tensor([channels], 5),
    variance: tf.add(tf.mul(tf.abs(tensor([channels], 6)), 1.8), 0.2),
    offset: c.offsetAndScale ? tensor([channels], 7) : undefined,
    scale: c.offsetAndScale ? tf.mul(tensor([channels], 8), 3) : undefined,
  };
}

async function bnPoolOutputs(c: BnPoolCase, backend: string) {
  const { size, strides, pad } = c.pool;
  await tf.setBackend(backend);
  const reference = tf.tidy(() => {
    const { x, mean, variance, offset, scale } = bnInputs(c);
    return tf.maxPool(tf.batchNorm(x as tf.Tensor4D, mean, variance, offset, scale, 1e-3), size, strides, pad);
  });
  const expected = Float32Array.from(await reference.data());
  reference.dispose();
  await tf.setBackend('native');
  const fused = tf.tidy(() => {
    const inputs = Object.fromEntries(Object.entries(bnInputs(c)).filter(([, t]) => t !== undefined)) as Record<string, tf.Tensor>;
    const attrs = { varianceEpsilon: 1e-3, poolSize: size, poolStrides: strides, poolPad: pad };
    return tf.engine().runKernel(BATCH_NORM_MAX_POOL, inputs, attrs) as tf.Tensor;
  });
  const actual = Float32Array.from(await fused.data());
  expect(fused.shape).toEqual(reference.shape);
  fused.dispose();
  return { expected, actual };
}

/** The kernels that ran in fn, in order, once per run. */
async function kernelsOf(fn: () => tf.Tensor): Promise<string[]> {
  const info = await tf.profile(() => {
    const y = fn();
    y.dataSync();
    return y;
  });
  return info.kernels.map((k) => k.name);
}

/** The seed model at 32x32, its batch-norms given statistics and weights away from their initial 0 and 1. */
function seedModel(): tf.LayersModel {
  const model = buildModel({ variant: 'seed', imageSize: 32, channels: 1, seed: 3, normalize: 'standardize' });
  let seed = 10;
  for (const layer of model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) {
    // gamma, beta, moving mean, moving variance (positive)
    const [gamma, beta, mean, variance] = layer.getWeights();
    layer.setWeights([
      tensor(gamma.shape, seed++),
      tensor(beta.shape, seed++),
      tf.mul(tensor(mean.shape, seed++), 0.1),
      tf.add(tf.abs(tensor(variance.shape, seed++)), 0.01),
    ]);
  }
  return model;
}

describe.skipIf(Boolean(skipWhy))('fused inference on native', () => {
  const addon = () => (loaded as { addon: NativeAddon }).addon;

  beforeAll(async () => {
    expect(tryRegisterNative()).toMatchObject({ ok: true });
    await tf.setBackend('native');
  });
  afterAll(async () => {
    addon().setConvAlgorithm('auto');
    installFusedInference();
    await tf.setBackend('native');
  });

  it.each(['direct', 'winograd2x2', 'winograd4x4', 'auto'] as Algorithm[])(
    "conv + bias + ReLU + max pooling is tfjs's three ops to the bit on native, and within rounding of cpu's (%s)",
    async (algorithm) => {
      try {
        addon().setConvAlgorithm(algorithm);
        for (const c of convPoolCases) {
          const onNative = await convPoolOutputs(c, 'native');
          expect(onNative.actual.data.length, c.name).toBeGreaterThan(0);
          expect(onNative.actual.shape, c.name).toEqual(onNative.expected.shape);
          // toEqual holds NaN equal to NaN: the same values, NaN where tfjs has NaN.
          expect(Array.from(onNative.actual.data), c.name).toEqual(Array.from(onNative.expected.data));
          if (c.nanAt) continue; // cpu's direct convolution spreads NaN over fewer outputs than a Winograd tile does
          const onCpu = await convPoolOutputs(c, 'cpu');
          expectCloseToScale([onCpu.actual.data], [onCpu.expected.data], 1e-4);
        }
      } finally {
        addon().setConvAlgorithm('auto');
      }
    },
  );

  it.each(bnPoolCases)("batch-norm + max pooling is tfjs's two ops to the bit on native, within rounding of cpu's: $name", async (c) => {
    const onNative = await bnPoolOutputs(c, 'native');
    expect(Array.from(onNative.actual)).toEqual(Array.from(onNative.expected));
    const onCpu = await bnPoolOutputs(c, 'cpu');
    expectCloseToScale([onCpu.actual], [onCpu.expected], 1e-5);
  });

  it("predict runs the seed model's pairs fused, with tfjs's own predict's outputs to the bit", async () => {
    const model = seedModel();
    const x = tensor([6, 32, 32, 1], 20);
    try {
      expect(fusedInferenceInstalled()).toBe(true);
      const kernels = await kernelsOf(() => model.predict(x) as tf.Tensor);
      // Block 1's conv + pooling, and blocks 2 to 5's batch-norm + pooling.
      expect(kernels.filter((k) => k === CONV_BIAS_RELU_MAX_POOL)).toHaveLength(1);
      expect(kernels.filter((k) => k === BATCH_NORM_MAX_POOL)).toHaveLength(4);
      expect(kernels).not.toContain('MaxPool');
      // No tensor is left behind but the output, and the layers' outputs go as the next one has read them.
      const before = tf.memory().numTensors;
      const output = model.predict(x) as tf.Tensor;
      expect(tf.memory().numTensors).toBe(before + 1);
      const fused = output.dataSync();
      output.dispose();

      const peakBytes = async () => (await tf.profile(() => (model.predict(x) as tf.Tensor).dispose())).peakBytes;
      const fusedPeak = await peakBytes();

      uninstallFusedInference();
      expect(await kernelsOf(() => model.predict(x) as tf.Tensor)).not.toContain(CONV_BIAS_RELU_MAX_POOL);
      const tfjs = (model.predict(x) as tf.Tensor).dataSync();
      // Memory peaks no higher than tfjs's executor, which disposes each layer's output once read.
      expect(fusedPeak).toBeLessThanOrEqual(await peakBytes());
      expect(Array.from(fused)).toEqual(Array.from(tfjs));
      expect(new Set(Array.from(tfjs).map((p) => p.toFixed(6))).size).toBeGreaterThan(1); // the images differ
    } finally {
      installFusedInference();
      tf.dispose([x, model]);
    }
  });

  it('leaves to tfjs what it cannot take: several batches, a wrong shape, a gradient tape, a model that is not a chain, another backend', async () => {
    const model = seedModel();
    const x = tensor([40, 32, 32, 1], 21);
    try {
      // 40 images are two of predict's default batches of 32; with batchSize 40, one.
      const fusedCount = async (fn: () => tf.Tensor) => (await kernelsOf(fn)).filter((k) => k === CONV_BIAS_RELU_MAX_POOL).length;
      expect(await fusedCount(() => model.predict(x) as tf.Tensor)).toBe(0);
      expect(await fusedCount(() => model.predict(x, { batchSize: 40 }) as tf.Tensor)).toBe(1);
      // Within rounding: batches of other sizes may time to other convolution algorithms.
      const twoBatches = (model.predict(x) as tf.Tensor).dataSync() as Float32Array;
      const oneBatch = (model.predict(x, { batchSize: 40 }) as tf.Tensor).dataSync() as Float32Array;
      expectCloseToScale([oneBatch], [twoBatches], 1e-6);

      // tfjs's own error for an input of the wrong shape.
      expect(() => model.predict(tf.zeros([2, 30, 30, 1]))).toThrow(/expected input to have shape \[null,32,32,1\]/);

      // Under a tape the fused kernels (which have no gradient) stay out, and the gradient is tfjs's.
      const grad = tf.grad((input: tf.Tensor) => (model.predict(input, { batchSize: 40 }) as tf.Tensor).sum())(x);
      expect(grad.shape).toEqual(x.shape);
      expect(tf.any(tf.notEqual(grad, 0)).dataSync()[0]).toBe(1);

      // A skip connection: the conv's output has a second reader, so it is not a chain.
      const input = tf.input({ shape: [8, 8, 16] });
      const conv = tf.layers.conv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu' }).apply(input) as tf.SymbolicTensor;
      const pooled = tf.layers.maxPooling2d({ poolSize: 2 }).apply(conv) as tf.SymbolicTensor;
      const skip = tf.layers.maxPooling2d({ poolSize: 2 }).apply(input) as tf.SymbolicTensor;
      const branched = tf.model({ inputs: input, outputs: tf.layers.add().apply([pooled, skip]) as tf.SymbolicTensor });
      const branchInput = tensor([2, 8, 8, 16], 22);
      expect(await fusedCount(() => branched.predict(branchInput) as tf.Tensor)).toBe(0);
      tf.dispose([branchInput, branched]);

      // A Sequential model is a chain of its inner model's layers.
      const sequential = tf.sequential({
        layers: [
          tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, activation: 'relu' }),
          tf.layers.maxPooling2d({ poolSize: 2 }),
        ],
      });
      const seqInput = tensor([2, 8, 8, 3], 23);
      expect(await fusedCount(() => sequential.predict(seqInput) as tf.Tensor)).toBe(1);

      await tf.setBackend('cpu');
      expect(await fusedCount(() => sequential.predict(seqInput) as tf.Tensor)).toBe(0);
      await tf.setBackend('native');
      tf.dispose([seqInput, sequential]);
    } finally {
      tf.dispose([x, model]);
    }
  });
});
