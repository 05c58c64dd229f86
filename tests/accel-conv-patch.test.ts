/**
 * The fused convolution + bias + ReLU layers (src/accel/fused/conv-layers.ts) replace tfjs-layers' Conv2D and
 * SeparableConv2D `call`. With them, a training step on `native` and on `wasm` must give tfjs's outputs and gradients,
 * both against tfjs's methods on that backend and against cpu (the inputs straddle zero, so ReLU masks part of the
 * gradient); layers they do not take (another activation or none, no bias) keep tfjs's method. The conv layer's 6
 * channels take wasm's plain-loop mask and sums, the separable layer's 4 its SIMD loop. The native half needs the
 * addon (skipped, visibly, when it is not built).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { expectCloseToScale } from './close-arrays';
import { loadNativeAddon, tryRegisterNative } from '../src/accel/onednn';
import { startWasmBackend } from '../src/accel/wasm/setup';
import { fusedConvLayersInstalled, installFusedConvLayers, uninstallFusedConvLayers } from '../src/accel/fused/conv-layers';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[conv layer patch tests skipped] ${skipWhy}`);
const FUSED_KERNEL = 'Conv2DBiasRelu';
const SEPARABLE_KERNEL = 'SeparableConv2dBiasRelu';

type ConvArgs = Partial<tf.layers.Layer['getConfig']> & Record<string, unknown>;

const init = (seed: number) => tf.initializers.glorotUniform({ seed });
const bias = (seed: number) => tf.initializers.randomUniform({ minval: -0.2, maxval: 0.2, seed });

/** A 3x3 'same' separable conv + ReLU layer with seeded weights and a bias straddling zero; `extra` overrides. */
function separableLayer(filters: number, extra: ConvArgs = {}): tf.layers.Layer {
  return tf.layers.separableConv2d({
    filters,
    kernelSize: 3,
    padding: 'same',
    activation: 'relu',
    depthwiseInitializer: init(3),
    pointwiseInitializer: init(4),
    biasInitializer: bias(5),
    ...extra,
  });
}

/** conv (stride 2, 'valid') -> separable conv ('same') -> dense: a ReLU at both, and a gradient through both. */
function net(conv: ConvArgs = {}, separable: ConvArgs = {}): tf.LayersModel {
  const input = tf.input({ shape: [11, 11, 2] });
  let x = tf.layers
    .conv2d({ filters: 6, kernelSize: 3, strides: 2, activation: 'relu', kernelInitializer: init(1), biasInitializer: bias(2), ...conv })
    .apply(input) as tf.SymbolicTensor;
  x = separableLayer(4, separable).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, kernelInitializer: init(6) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

/** Conv + ReLU layers (16 filters, 3x3, 'same' unless `convs` says otherwise) on one-channel 13x13 images, then dense. */
function oneChannelNet(...convs: ConvArgs[]): tf.LayersModel {
  const input = tf.input({ shape: [13, 13, 1] });
  let x = input;
  convs.forEach((conv, i) => {
    const layer = tf.layers.conv2d({
      filters: 16,
      kernelSize: 3,
      padding: 'same',
      activation: 'relu',
      kernelInitializer: init(10 + i),
      biasInitializer: bias(20 + i),
      ...conv,
    });
    x = layer.apply(x) as tf.SymbolicTensor;
  });
  x = tf.layers.flatten().apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 1, kernelInitializer: init(6) }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

interface StepResult {
  output: Float32Array;
  grads: Float32Array[];
  kernels: string[];
}

async function step(backend: string, build: () => tf.LayersModel = () => net()): Promise<StepResult> {
  await tf.setBackend(backend);
  const model = build();
  const rng = makeRng(9);
  const shape = [3, ...model.inputs[0].shape.slice(1)] as [number, number, number, number];
  const x = tf.tensor4d(
    Float32Array.from({ length: tf.util.sizeFromShape(shape) }, () => rng() * 2 - 0.5),
    shape,
  );
  const weights = model.trainableWeights.map((w) => w.read() as tf.Variable);
  let output = new Float32Array(0);
  let grads: Float32Array[] = [];
  const profile = await tf.profile(() => {
    const { grads: g, value } = tf.variableGrads(() => {
      const y = model.apply(x, { training: true }) as tf.Tensor;
      output = y.dataSync() as Float32Array;
      return tf.sum(tf.mul(y, tf.tensor2d([[1], [-2], [0.5]]))) as tf.Scalar;
    }, weights);
    grads = weights.map((w) => g[w.name].dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(g)]);
  });
  x.dispose();
  model.dispose();
  return { output, grads, kernels: profile.kernels.map((k) => k.name) };
}

const backends = [
  { backend: 'native', skip: skipWhy, start: async () => expect(tryRegisterNative()).toMatchObject({ ok: true }) },
  { backend: 'wasm', skip: '', start: async () => void (await startWasmBackend()) },
];

describe.each(backends)('fused conv + bias + relu layers on $backend', ({ backend, skip, start }) => {
  beforeAll(async () => {
    if (!skip) await start();
  });
  afterAll(() => installFusedConvLayers());

  it.skipIf(Boolean(skip))("gives tfjs's outputs and gradients (against tfjs's methods on the backend, and cpu)", async () => {
    expect(fusedConvLayersInstalled()).toBe(true);
    const fused = await step(backend);
    uninstallFusedConvLayers();
    const tfjsMethod = await step(backend);
    const cpu = await step('cpu');
    installFusedConvLayers();

    // Both layers ran fused: one fused kernel each, and no separate bias add or ReLU.
    expect(fused.kernels.filter((k) => k === FUSED_KERNEL)).toHaveLength(2);
    expect(fused.kernels).not.toContain('Relu');
    // Each layer's gradient took ReLU's mask and the bias's gradient in one pass.
    expect(fused.kernels.filter((k) => k === 'ReluGradChannelSums')).toHaveLength(2);
    expect(tfjsMethod.kernels).not.toContain(FUSED_KERNEL);
    // Under the tape the separable layer keeps its two convolutions: its one-pass kernel has no gradient.
    expect(fused.kernels).not.toContain(SEPARABLE_KERNEL);
    for (const reference of [tfjsMethod, cpu]) {
      expectCloseToScale([fused.output], [reference.output], 1e-5);
      expectCloseToScale(fused.grads, reference.grads, 1e-5);
    }
  });

  // native's one-pass weight gradients of a one-channel layer: 3x3 and 16 filters (its register loop), and another
  // geometry (its generic loop); a one-channel layer after another layer, whose input needs a gradient too.
  it.skipIf(Boolean(skip)).each([
    { why: "3x3, 16 filters, 'same'", convs: [{}] },
    { why: "5x5, 6 filters, stride 2, 'valid'", convs: [{ kernelSize: 5, filters: 6, strides: 2, padding: 'valid' }] },
    { why: 'a one-filter layer, then 3x3 and 16 filters', convs: [{ filters: 1 }, {}] },
  ])("a one-channel input layer ($why) gives tfjs's gradients", async ({ convs }) => {
    const fused = await step(backend, () => oneChannelNet(...convs));
    uninstallFusedConvLayers();
    const tfjsMethod = await step(backend, () => oneChannelNet(...convs));
    const cpu = await step('cpu', () => oneChannelNet(...convs));
    installFusedConvLayers();
    const oneChannelKernels = fused.kernels.filter((k) => k === 'ReluFilterGradOneChannel');
    expect(oneChannelKernels).toHaveLength(backend === 'native' ? convs.length : 0);
    for (const reference of [tfjsMethod, cpu]) {
      expectCloseToScale([fused.output], [reference.output], 1e-5);
      expectCloseToScale(fused.grads, reference.grads, 1e-5);
    }
  });

  it.skipIf(Boolean(skip)).each([
    { why: 'another activation (elu)', conv: { activation: 'elu' }, separable: { activation: 'elu' } },
    { why: 'no bias', conv: { useBias: false }, separable: { useBias: false } },
    { why: 'no activation', conv: { activation: 'linear' }, separable: { activation: 'linear' } },
  ])("leaves $why to tfjs's method", async ({ conv, separable }) => {
    const fused = await step(backend, () => net(conv, separable));
    const cpu = await step('cpu', () => net(conv, separable));
    expect(fused.kernels).not.toContain(FUSED_KERNEL);
    expectCloseToScale(fused.grads, cpu.grads, 1e-4);
  });
});

/** One separable conv + bias + ReLU layer (3x3 depthwise) on [3, h, w, ci] inputs. */
function separableNet(h: number, w: number, ci: number, co: number, layer: ConvArgs = {}): tf.LayersModel {
  const input = tf.input({ shape: [h, w, ci] });
  const out = separableLayer(co, layer).apply(input) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

/** The model's prediction on `backend` for seeded inputs straddling zero, and the kernels it ran. */
async function predictOn(backend: string, build: () => tf.LayersModel): Promise<{ output: Float32Array; kernels: string[] }> {
  await tf.setBackend(backend);
  const model = build();
  const shape = [3, ...model.inputs[0].shape.slice(1)] as [number, number, number, number];
  const rng = makeRng(11);
  const x = tf.tensor4d(
    Float32Array.from({ length: tf.util.sizeFromShape(shape) }, () => rng() * 2 - 1),
    shape,
  );
  let output = new Float32Array(0);
  const profile = await tf.profile(() => {
    output = tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync() as Float32Array);
  });
  x.dispose();
  model.dispose();
  return { output, kernels: profile.kernels.map((k) => k.name) };
}

describe("a separable layer's prediction in one kernel on native (SeparableConv2dBiasRelu)", () => {
  beforeAll(() => {
    if (!skipWhy) expect(tryRegisterNative()).toMatchObject({ ok: true });
  });

  // 16 -> 32 and 32 -> 64 channels: the one-pass loops on AVX-512 and AVX2 builds; 4 -> 8: channels this build's
  // vectors do not divide, so the kernel runs the two convolutions. Widths: 10 pixels a row (a chunk of 90 pixels,
  // whose last register block overlaps the one before), 2x2 (fewer pixels than a block) and one column.
  it.skipIf(Boolean(skipWhy)).each([
    { h: 9, w: 10, ci: 16, co: 32 },
    { h: 7, w: 6, ci: 32, co: 64 },
    { h: 2, w: 2, ci: 16, co: 32 },
    { h: 5, w: 1, ci: 16, co: 32 },
    { h: 6, w: 7, ci: 4, co: 8 },
  ])("$h x $w x $ci -> $co gives cpu's output", async ({ h, w, ci, co }) => {
    const native = await predictOn('native', () => separableNet(h, w, ci, co));
    const cpu = await predictOn('cpu', () => separableNet(h, w, ci, co));
    expect(native.kernels.filter((k) => k === SEPARABLE_KERNEL)).toHaveLength(1);
    expect(native.kernels).not.toContain('DepthwiseConv2dNative');
    expect(cpu.output.some((v) => v === 0) && cpu.output.some((v) => v > 0)).toBe(true); // ReLU cut some
    expectCloseToScale([native.output], [cpu.output], 1e-5);
  });

  it.skipIf(Boolean(skipWhy)).each([
    { why: "'valid' padding", layer: { padding: 'valid' } },
    { why: 'stride 2', layer: { strides: 2 } },
    { why: 'a 5x5 window', layer: { kernelSize: 5 } },
    { why: 'depth multiplier 2', layer: { depthMultiplier: 2 } },
  ])('leaves $why to the two convolutions', async ({ layer }) => {
    const native = await predictOn('native', () => separableNet(9, 10, 16, 32, layer));
    const cpu = await predictOn('cpu', () => separableNet(9, 10, 16, 32, layer));
    expect(native.kernels).not.toContain(SEPARABLE_KERNEL);
    expectCloseToScale([native.output], [cpu.output], 1e-5);
  });
});
