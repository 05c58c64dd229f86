/**
 * The optional `native` tfjs backend: tfjs's own CPU backend with its heavy kernels
 * (convolutions and their gradients, depthwise convolutions, max pooling, matmul and a few
 * large element-wise ops) replaced by a C++ addon on oneDNN (accel/onednn/, `npm run build:native`).
 *
 * Why the CPU backend as the base: every kernel tfjs has exists there, so anything the addon
 * does not cover (other dtypes, NCHW, exotic activations) falls back to a correct kernel, and
 * tensor storage is a plain Float32Array the addon can read and write in place (zero copy).
 *
 * Once a step's convolutions were native, the element-wise chains around them cost more: so the
 * ReLU and mean gradients, training-mode batch-norm, convolution + bias + ReLU layers and Adam's update
 * are fused too (gradients.ts, batchnorm.ts, adam.ts here; the layer patches and gradients the wasm backend
 * shares are in ../fused/), and so, in prediction, is each max pooling with the layer before it
 * (../fused/inference.ts), only while this backend is active.
 *
 * Nothing here is required: when the addon is not built, tryRegisterNative says why and the
 * backend chain moves on.
 */
import * as tf from '@tensorflow/tfjs';
import { type ConvAlgorithmChoice, applyThreadSetting, loadNativeAddon } from './addon';
import { NATIVE_BACKEND, NATIVE_PRIORITY, NativeBackend } from './backend';
import { registerFusedAdam } from './adam';
import { registerFusedBatchNorm } from './batchnorm';
import { SEPARABLE_CONV_BIAS_RELU, installFusedConvLayers, registerConvBiasRelu } from '../fused/conv-layers';
import { registerNativeOnly } from './common';
import { BATCH_NORM_MAX_POOL, CONV_BIAS_RELU_MAX_POOL, installFusedInference } from '../fused/inference';
import {
  CONV_BIAS_RELU_MAX_POOL_TRAIN,
  CONV_POOLED_GRAD_FILTER,
  CONV_POOLED_GRAD_INPUT,
  POOLED_RELU_GRAD_SUMS,
  installFusedTrainingPairs,
} from '../fused/train-pairs';
import { BATCH_NORM_MAX_POOL_TRAIN } from '../fused/batchnorm';
import {
  batchNormMaxPool,
  batchNormMaxPoolTrain,
  convBiasReluMaxPool,
  convBiasReluMaxPoolTrain,
  convPooledGradFilter,
  convPooledGradInput,
  pooledReluGradSums,
  separableConvBiasRelu,
  standardizeImages,
} from './kernels';
import { STANDARDIZE_IMAGES } from '../../model/normalization';
import { registerFusedGradients } from './gradients';
import { keepConvChoices } from './conv-choices';
import { registerKernels } from './registry';

export { fusedAdamInstalled, installFusedAdam, uninstallFusedAdam } from '../fused/adam';
export { fusedBatchNormInstalled, installFusedBatchNorm, uninstallFusedBatchNorm } from '../fused/batchnorm';
export { fusedConvLayersInstalled, installFusedConvLayers, uninstallFusedConvLayers } from '../fused/conv-layers';
export { fusedInferenceInstalled, installFusedInference, uninstallFusedInference } from '../fused/inference';
export { fusedTrainingPairsInstalled, installFusedTrainingPairs, uninstallFusedTrainingPairs } from '../fused/train-pairs';
export { loadNativeAddon, type ConvAlgorithmChoice, type NativeAddon } from './addon';
export { CONV_CHOICES_FILE, convChoicesKey, loadConvChoices, saveConvChoices } from './conv-choices';
export { NATIVE_BACKEND, NativeBackend } from './backend';
export { releaseNativePool } from './buffers';
export { nativeFallbacks, nativeKernelNames } from './registry';

export type NativeRegistration = { ok: true; threads: number } | { ok: false; why: string };

let registration: NativeRegistration | undefined;

/** Registers the `native` backend and its kernels (idempotent). Never throws. */
export function tryRegisterNative(): NativeRegistration {
  if (registration) return registration;
  const loaded = loadNativeAddon();
  if ('why' in loaded) return { ok: false, why: loaded.why };
  try {
    const threads = applyThreadSetting(loaded.addon);
    registerKernels(loaded.addon);
    registerFusedGradients(loaded.addon);
    registerFusedAdam(loaded.addon);
    registerFusedBatchNorm(loaded.addon);
    // After registerKernels: the fused layers' forward pass is the native FusedConv2D (the addon, with its CPU fallback).
    registerConvBiasRelu(NATIVE_BACKEND);
    // An addon built before these kernels existed lacks them: separable layers then keep their two convolutions, and
    // the input standardization its tfjs ops.
    if (typeof loaded.addon.separableConvBiasRelu === 'function') {
      registerNativeOnly(SEPARABLE_CONV_BIAS_RELU, separableConvBiasRelu(loaded.addon));
    }
    if (typeof loaded.addon.standardizeImages === 'function') {
      registerNativeOnly(STANDARDIZE_IMAGES, standardizeImages(loaded.addon));
    }
    // Prediction runs each layer before a max pooling together with it (../fused/inference.ts).
    if (typeof loaded.addon.convForwardMaxPool === 'function' && typeof loaded.addon.batchNormMaxPool === 'function') {
      registerNativeOnly(CONV_BIAS_RELU_MAX_POOL, convBiasReluMaxPool(loaded.addon));
      registerNativeOnly(BATCH_NORM_MAX_POOL, batchNormMaxPool(loaded.addon));
    }
    // Training runs each conv + ReLU layer or batch-norm and the max pooling after it as one kernel
    // (../fused/train-pairs.ts).
    if (typeof loaded.addon.convBackwardDataPooled === 'function') {
      registerNativeOnly(CONV_BIAS_RELU_MAX_POOL_TRAIN, convBiasReluMaxPoolTrain(loaded.addon));
      registerNativeOnly(CONV_POOLED_GRAD_INPUT, convPooledGradInput(loaded.addon));
      registerNativeOnly(CONV_POOLED_GRAD_FILTER, convPooledGradFilter(loaded.addon));
      registerNativeOnly(POOLED_RELU_GRAD_SUMS, pooledReluGradSums(loaded.addon));
      registerNativeOnly(BATCH_NORM_MAX_POOL_TRAIN, batchNormMaxPoolTrain(loaded.addon));
    }
    installFusedConvLayers();
    installFusedInference();
    installFusedTrainingPairs();
    tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(), NATIVE_PRIORITY);
    registration = { ok: true, threads };
  } catch (err) {
    registration = { ok: false, why: `native backend failed to register: ${(err as Error).message}` };
  }
  return registration;
}

const ALGORITHM_NAMES: Record<ConvAlgorithmChoice['algorithm'], string> = {
  direct: 'direct',
  winograd: 'Winograd',
  winograd2x2: 'Winograd F(2x2)',
  winograd4x4: 'Winograd F(4x4)',
};

/**
 * Convolution choices kept between processes on this machine (conv-choices.ts): read now, written at exit. A note for
 * the backend line where some were read; undefined otherwise.
 */
export function keepNativeConvChoices(): string | undefined {
  const loaded = loadNativeAddon();
  if ('why' in loaded) return undefined;
  const kept = keepConvChoices(loaded.addon);
  return kept && kept.read > 0 ? `conv algorithms as timed before on this machine (${kept.file})` : undefined;
}

/** Float lanes of the addon's own vector loops (16, 8 or 4, per its -march); undefined without the addon. */
export function nativeVectorLanes(): number | undefined {
  const loaded = loadNativeAddon();
  if ('why' in loaded || typeof loaded.addon.vectorLanes !== 'function') return undefined;
  return loaded.addon.vectorLanes();
}

/**
 * Which algorithm the timing chose, counted over the (direction, geometry) pairs timed: "Winograd F(4x4) for all 11
 * timed" or "Winograd F(4x4) for 9 and direct for 2 of 11 timed", the most chosen first.
 */
export function summarizeConvChoices(choices: readonly Pick<ConvAlgorithmChoice, 'algorithm'>[]): string {
  const counts = new Map<string, number>();
  for (const c of choices) counts.set(ALGORITHM_NAMES[c.algorithm], (counts.get(ALGORITHM_NAMES[c.algorithm]) ?? 0) + 1);
  const byCount = [...counts].sort((a, b) => b[1] - a[1]);
  if (byCount.length === 1) return `${byCount[0][0]} for all ${choices.length} timed`;
  const parts = byCount.map(([name, n]) => `${name} for ${n}`);
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]} of ${choices.length} timed`;
}

/**
 * One line on the convolution algorithms the `native` backend timed and chose so far (accel/onednn/src/conv.cc):
 * with `timings` (what the bench prints and config.json records) each choice and the times it compared, e.g.
 * "forward 32x150x150x16 Winograd F(4x4) (Winograd 24.1 ms, Winograd F(2x2) 13.6 ms, Winograd F(4x4) 9.8 ms, direct
 * 13.2 ms)"; `brief`, for logs and notebooks, only summarizeConvChoices. Undefined before any such choice.
 */
export function describeConvChoices(detail: 'timings' | 'brief' = 'timings'): string | undefined {
  const loaded = loadNativeAddon();
  if ('why' in loaded) return undefined;
  const choices = loaded.addon.convAlgorithmChoices();
  if (choices.length === 0) return undefined;
  if (detail === 'brief') return summarizeConvChoices(choices);
  return choices
    .map((c) => {
      const shape = `${c.geometry[0]}x${c.geometry[1]}x${c.geometry[2]}x${c.geometry[3]}`;
      const timed = [
        c.winogradMs < 0 ? 'no oneDNN Winograd' : `Winograd ${c.winogradMs.toFixed(1)} ms`,
        ...(c.winograd2x2Ms < 0 ? [] : [`Winograd F(2x2) ${c.winograd2x2Ms.toFixed(1)} ms`]),
        ...(c.winograd4x4Ms < 0 ? [] : [`Winograd F(4x4) ${c.winograd4x4Ms.toFixed(1)} ms`]),
        `direct ${c.directMs.toFixed(1)} ms`,
      ];
      return `${c.direction} ${shape} ${ALGORITHM_NAMES[c.algorithm]} (${timed.join(', ')})`;
    })
    .join('; ');
}
