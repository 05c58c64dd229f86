/** The native backend's kernel for the fused training batch-norm (../fused/batchnorm.ts). */
import type { NativeAddon } from './addon';
import { uninitialised } from './buffers';
import { type NativeKernel, output, registerNativeOnly, size, values } from './common';
import { pooledGradArgs } from './kernels';
import {
  BATCH_NORM_MOMENTS,
  BATCH_NORM_TRAIN_GRAD,
  BATCH_NORM_TRAIN_GRAD_RELU,
  batchNormGradCoefficients,
  installFusedBatchNorm,
} from '../fused/batchnorm';

/**
 * The native BATCH_NORM_TRAIN_GRAD: the per-channel sums in one OpenMP-threaded pass, then dx in another; with
 * maskRelu, BATCH_NORM_TRAIN_GRAD_RELU (dx times step(x), and its sums, from the second pass). Given `codes`, dy is
 * the gradient of BATCH_NORM_MAX_POOL_TRAIN's pooling, which both passes expand as they read it.
 */
function trainGrad(a: NativeAddon, maskRelu: boolean): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { dy, x, mean, variance, scale, codes } = inputs;
    const pooled = codes ? pooledGradArgs(backend, codes, attrs!) : [];
    const channels = mean.shape[0];
    const m = values(backend, mean);
    const sums = new Float32Array(2 * channels);
    a.batchNormGradSums(values(backend, dy), values(backend, x), m, sums, ...pooled);
    const { coef, dScale, dOffset } = batchNormGradCoefficients(
      sums,
      values(backend, variance),
      values(backend, scale),
      Number(attrs?.varianceEpsilon ?? 0.001),
      size(x.shape) / channels,
    );
    const dx = uninitialised(size(x.shape));
    const reluSums = maskRelu ? new Float32Array(channels) : undefined;
    a.batchNormTrainGrad(values(backend, dy), values(backend, x), m, coef, dx, reluSums, ...pooled);
    const grads = [output(backend, [...x.shape], dx), output(backend, [channels], dScale), output(backend, [channels], dOffset)];
    return reluSums ? [...grads, output(backend, [channels], reluSums)] : grads;
  };
}

/** The native BATCH_NORM_MOMENTS: mean and biased variance per channel in one threaded pass. */
function moments(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { x } = inputs;
    const c = x.shape[x.shape.length - 1];
    const out = new Float32Array(2 * c);
    a.batchNormMoments(values(backend, x), out);
    return [output(backend, [c], out.slice(0, c)), output(backend, [c], out.slice(c))];
  };
}

/** Registers the gradient kernel and installs the fused call; an addon built before this kernel existed keeps tfjs's. */
export function registerFusedBatchNorm(a: NativeAddon): void {
  if (typeof a.batchNormTrainGrad !== 'function') return;
  registerNativeOnly(BATCH_NORM_TRAIN_GRAD, trainGrad(a, false));
  registerNativeOnly(BATCH_NORM_TRAIN_GRAD_RELU, trainGrad(a, true));
  if (typeof a.batchNormMoments === 'function') registerNativeOnly(BATCH_NORM_MOMENTS, moments(a));
  installFusedBatchNorm();
}
