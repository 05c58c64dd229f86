/** Fused gradients of ReLU, batch-norm and mean, used while `native` is the active backend. */
import * as tf from '@tensorflow/tfjs';
import { RELU_FILTER_GRAD_ONE_CHANNEL, RELU_GRAD_CHANNEL_SUMS } from '../fused/conv-layers';
import { FUSED_RELU_GRAD, installFusedReluGradient, replaceGradient } from '../fused/gradients';
import type { NativeAddon } from './addon';
import { NATIVE_BACKEND } from './backend';
import { maxPoolGradRelu, reluFilterGradOneChannel } from './kernels';
import { MAX_POOL_GRAD_RELU } from '../fused/pool-layers';
import { uninitialised } from './buffers';
import { type Attrs, type Backend, type NativeKernel, allFloat32, output, registerNativeOnly, size, values } from './common';

function reluGrad(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { dy, x } = inputs;
    const y = uninitialised(size(x.shape));
    a.reluGrad(values(backend, dy), values(backend, x), y);
    return output(backend, [...x.shape], y);
  };
}

function reluGradChannelSums(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { dy, y } = inputs;
    const channels = y.shape[y.shape.length - 1];
    const masked = uninitialised(size(y.shape));
    const sums = new Float32Array(channels);
    a.reluGradChannelSums(values(backend, dy), values(backend, y), masked, sums);
    return [output(backend, [...y.shape], masked), output(backend, [channels], sums)];
  };
}

/**
 * Gradients that tfjs computes as chains of activation-sized ops, replaced by one fused native
 * kernel while the native backend is active (tfjs's gradient registry is global, so on any other
 * backend, or for inputs the fused kernel does not take, the original gradient runs unchanged).
 */
export function registerFusedGradients(a: NativeAddon): void {
  registerNativeOnly(FUSED_RELU_GRAD, reluGrad(a));
  registerNativeOnly(RELU_GRAD_CHANNEL_SUMS, reluGradChannelSums(a));
  if (typeof a.reluFilterGradOneChannel === 'function') registerNativeOnly(RELU_FILTER_GRAD_ONE_CHANNEL, reluFilterGradOneChannel(a));
  if (typeof a.maxPoolGradRelu === 'function') registerNativeOnly(MAX_POOL_GRAD_RELU, maxPoolGradRelu(a));
  registerBatchNormGradient(a);
  registerMeanGradient();
  installFusedReluGradient();
}

/**
 * Mean's gradient as one broadcast of dy / n. tfjs multiplies dy by a tensor of ones the size of x (filled in
 * JavaScript, on one thread) and then divides the product by n: three activation-sized passes per mean, and
 * batch-norm's training statistics take two means per layer on every step. Dividing the reduced dy first
 * and tiling it writes the same values once.
 */
function registerMeanGradient(): void {
  replaceGradient(tf.Mean, (original) => (dy, saved, attrs) => {
    const dyT = dy as tf.Tensor;
    const [x] = saved;
    if (tf.getBackend() !== NATIVE_BACKEND || !allFloat32(dyT, x)) return original(dy, saved, attrs);
    const axes = tf.util.parseAxisParam((attrs as Attrs).axis as number | number[], x.shape);
    const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const reps = x.shape.map((d, i) => (axes.includes(i) ? d : 1));
    const count = size(axes.map((i) => x.shape[i]));
    return { x: () => tf.tidy(() => tf.tile(tf.div(tf.reshape(dyT, keptShape), count), reps)) };
  });
}

/**
 * FusedBatchNorm's gradient with per-channel statistics (channels last), from two per-channel
 * sums taken in one native pass (see BatchNormGradSums) plus one per-channel Multiply for dx.
 * With r = rsqrt(variance + eps), s = scale (or 1), S1 = sum dy, S2 = sum dy * (x - mean):
 * dx = dy * (r * s), dmean = -r * s * S1, dvariance = -0.5 * r^3 * s * S2, dscale = r * S2,
 * doffset = S1: tfjs's formulas with the per-element factors taken out of the sums.
 */
function registerBatchNormGradient(a: NativeAddon): void {
  replaceGradient(tf.FusedBatchNorm, (original) => (dy, saved, attrs) => {
    const dyT = dy as tf.Tensor;
    const [x, mean, variance, scale] = saved;
    const channels = x.shape[x.shape.length - 1];
    const perChannel = (t: tf.Tensor | undefined | null) => t == null || (t.shape.length === 1 && t.shape[0] === channels);
    const fused =
      tf.getBackend() === NATIVE_BACKEND &&
      allFloat32(dyT, x, mean, variance, scale ?? undefined) &&
      x.shape.length >= 2 &&
      channels > 0 &&
      tf.util.arraysEqual(dyT.shape, x.shape) &&
      mean.shape.length === 1 &&
      perChannel(mean) &&
      perChannel(variance) &&
      perChannel(scale);
    if (!fused) return original(dy, saved, attrs);
    const backend = tf.backend() as Backend;
    // Tensors still held by another backend (made before a setBackend) take tfjs's path, which moves them.
    const local = [dyT, x, mean, variance, scale].every((t) => t == null || backend.data.has(t.dataId));
    if (!local) return original(dy, saved, attrs);
    const eps = Math.fround(Number((attrs as Attrs).varianceEpsilon ?? 0.001));
    const v = values(backend, variance);
    const s = scale == null ? undefined : values(backend, scale);
    const r = new Float32Array(channels);
    for (let c = 0; c < channels; c++) r[c] = 1 / Math.sqrt(Math.fround(v[c] + eps));
    const scaleOf = (c: number) => (s ? s[c] : 1);
    let sums: Float32Array | undefined;
    const channelSums = (): Float32Array => {
      if (!sums) {
        sums = new Float32Array(2 * channels);
        a.batchNormGradSums(values(backend, dyT), values(backend, x), values(backend, mean), sums);
      }
      return sums;
    };
    const vector = (f: (c: number, s1: number, s2: number) => number) => () => {
      const sm = channelSums();
      const out = new Float32Array(channels);
      for (let c = 0; c < channels; c++) out[c] = f(c, sm[c], sm[channels + c]);
      return tf.tensor1d(out);
    };
    return {
      x: () => tf.tidy(() => tf.mul(dyT, tf.tensor1d(r.map((rc, c) => rc * scaleOf(c))))),
      mean: vector((c, s1) => -r[c] * scaleOf(c) * s1),
      variance: vector((c, _s1, s2) => -0.5 * r[c] * r[c] * r[c] * scaleOf(c) * s2),
      scale: vector((c, _s1, s2) => r[c] * s2),
      offset: vector((_c, s1) => s1),
    };
  });
}
