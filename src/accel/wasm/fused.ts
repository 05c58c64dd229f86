/**
 * The wasm backend's kernels for the fused training ops of ../fused/: Adam's update (FUSED_ADAM), batch-norm's
 * closed-form gradient (BATCH_NORM_TRAIN_GRAD; BATCH_NORM_TRAIN_GRAD_RELU takes the ReLU layer's mask before it in the
 * same pass), ReLU's one-pass gradient (FUSED_RELU_GRAD) and, for conv + bias + ReLU layers, the same mask with the
 * bias's gradient (RELU_GRAD_CHANNEL_SUMS; the layer's forward pass is the stock XNNPACK FusedConv2D, registered by
 * registerConvBiasRelu). Without them a wasm training step runs batch-norm's gradient
 * as tfjs's chain of activation-sized Multiply, Add, Sum, Tile and RealDiv kernels, ReLU's as Step then Multiply,
 * and a conv layer's bias and ReLU as separate Add and Relu passes, each pass over memory single-threaded.
 * Both use the SIMD loops of simd.ts where they apply (4-float lanes: a channel count that is a multiple of 4), and
 * plain loops elsewhere.
 */
import type { TensorInfo } from '@tensorflow/tfjs';
import { BATCH_NORM_MOMENTS, BATCH_NORM_TRAIN_GRAD, BATCH_NORM_TRAIN_GRAD_RELU, batchNormGradCoefficients } from '../fused/batchnorm';
import { RELU_GRAD_CHANNEL_SUMS } from '../fused/conv-layers';
import { FUSED_RELU_GRAD } from '../fused/gradients';
import { FUSED_ADAM } from '../fused/adam';
import { type WasmBackend, allocate, byteOffset, release, runKernel, runRows, view } from './heap';
import { simdLoops } from './simd';
import type { RowCall } from './row-jobs';
import type { KernelArgs } from './stock';

/** [S1 | S2] per channel (S1 = sum dy, S2 = sum dy (x - mean)), accumulated in float64 across partial sums. */
function gradSums(backend: WasmBackend, dy: TensorInfo, x: TensorInfo, mean: TensorInfo, rows: number, c: number): Float64Array {
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (!loops || c % 4 !== 0) {
    const totals = new Float64Array(2 * c);
    const [d, xs, m] = [view(backend, dy), view(backend, x), view(backend, mean)];
    for (let r = 0, i = 0; r < rows; r++) {
      for (let k = 0; k < c; k++, i++) {
        totals[k] += d[i];
        totals[c + k] += d[i] * (xs[i] - m[k]);
      }
    }
    return totals;
  }
  // bnsums(dy, x, mean, s1, s2, rows, colsBytes), s1 and s2 in the thread's partial sums.
  const call: RowCall = {
    loop: 'bnsums',
    args: [byteOffset(backend, dy), byteOffset(backend, x), byteOffset(backend, mean), 0, c * 4, 0, c * 4],
    strides: [c * 4, c * 4, 0, 0, 0, 0, 0],
    countArg: 5,
    partialArgs: 0b11000,
  };
  return runRows(backend, loops, call, rows, rows * c, 2 * c);
}

/**
 * [dx * step(y), its per-channel sums] (RELU_GRAD_CHANNEL_SUMS) for a gradient dx of the ReLU output y, releasing dx:
 * the fallback of the kernels that take the mask in their own pass where their SIMD loop does not apply.
 */
export function maskedByRelu(backend: WasmBackend, dx: TensorInfo, y: TensorInfo): TensorInfo[] {
  const masked = runKernel(RELU_GRAD_CHANNEL_SUMS, backend, { dy: dx, y }) as unknown as TensorInfo[];
  release(backend, dx);
  return masked;
}

/**
 * dx = a dy + b (x - mean) + k per channel, coef = a | b | k; with `relu` (x a ReLU's output), dx times step(x) and
 * its per-channel sums, in the same pass.
 */
function inputGrad(
  backend: WasmBackend,
  dy: TensorInfo,
  x: TensorInfo,
  mean: TensorInfo,
  coef: Float32Array,
  rows: number,
  c: number,
  relu: boolean,
): { dx: TensorInfo; sums?: TensorInfo } {
  const dx = allocate(backend, x.shape.slice());
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (!loops || c % 4 !== 0) {
    const [d, xs, m, out] = [view(backend, dy), view(backend, x), view(backend, mean), view(backend, dx)];
    for (let r = 0, i = 0; r < rows; r++) {
      for (let k = 0; k < c; k++, i++) out[i] = d[i] * coef[k] + (xs[i] - m[k]) * coef[c + k] + coef[2 * c + k];
    }
    if (!relu) return { dx };
    const [masked, sums] = maskedByRelu(backend, dx, x);
    return { dx: masked, sums };
  }
  const coefficients = allocate(backend, [3 * c]);
  view(backend, coefficients).set(coef);
  const tensors = [dy, x, mean, coefficients, dx].map((t) => byteOffset(backend, t));
  const perRow = [c * 4, c * 4, 0, 0, c * 4];
  // bngrad(dy, x, mean, coef, dx, rows, colsBytes); bngradrelu(dy, x, mean, coef, dx, sums, rows, colsBytes), the sums
  // in the thread's partial sums.
  const call: RowCall = relu
    ? { loop: 'bngradrelu', args: [...tensors, 0, 0, c * 4], strides: [...perRow, 0, 0, 0], countArg: 6, partialArgs: 0b100000 }
    : { loop: 'bngrad', args: [...tensors, 0, c * 4], strides: [...perRow, 0, 0], countArg: 5, partialArgs: 0 };
  const totals = runRows(backend, loops, call, rows, rows * c, relu ? c : 0);
  release(backend, coefficients);
  if (!relu) return { dx };
  const sums = allocate(backend, [c]);
  view(backend, sums).set(totals);
  return { dx, sums };
}

/**
 * BATCH_NORM_TRAIN_GRAD: [dx, dscale, doffset]; `relu` (BATCH_NORM_TRAIN_GRAD_RELU, x a conv + bias + ReLU layer's
 * output): [dx * step(x), dscale, doffset, the per-channel sums of dx * step(x)].
 */
function batchNormTrainGrad({ inputs, backend, attrs }: KernelArgs, relu = false): TensorInfo[] {
  const { dy, x, mean, variance, scale } = inputs;
  // Only a backend that registers BATCH_NORM_MAX_POOL_TRAIN is given the pooling's codes; wasm does not.
  if (inputs.codes) throw new Error('wasm batch-norm gradient: given max-pool codes, which only native kernels take');
  const c = mean.shape[0];
  const rows = x.shape.reduce((a, b) => a * b, 1) / c;
  const sums = gradSums(backend, dy, x, mean, rows, c);
  const { coef, dScale, dOffset } = batchNormGradCoefficients(
    sums,
    view(backend, variance).slice(),
    view(backend, scale).slice(),
    Number(attrs.varianceEpsilon ?? 0.001),
    rows,
  );
  const dx = inputGrad(backend, dy, x, mean, coef, rows, c, relu);
  const dScaleInfo = allocate(backend, [c]);
  const dOffsetInfo = allocate(backend, [c]);
  view(backend, dScaleInfo).set(dScale);
  view(backend, dOffsetInfo).set(dOffset);
  return [dx.dx, dScaleInfo, dOffsetInfo, ...(dx.sums ? [dx.sums] : [])];
}

/**
 * Mean and biased variance per channel in one pass: sums of x - shift and its square, shift being each channel's
 * first value (so a large mean does not cancel the variance away), float32 partials moved into float64 totals.
 */
function batchNormMoments({ inputs, backend }: KernelArgs): TensorInfo[] {
  const { x } = inputs;
  const c = x.shape[x.shape.length - 1];
  const rows = x.shape.reduce((a, b) => a * b, 1) / c;
  const shiftInfo = allocate(backend, [c]);
  const shift = view(backend, x).slice(0, c);
  view(backend, shiftInfo).set(shift);
  const loops = simdLoops(backend.wasm.sharedMemory);
  let sums: Float64Array;
  if (loops && c % 4 === 0) {
    // bnmoments(x, shift, s1, s2, rows, colsBytes), s1 and s2 in the thread's partial sums.
    const call: RowCall = {
      loop: 'bnmoments',
      args: [byteOffset(backend, x), byteOffset(backend, shiftInfo), 0, c * 4, 0, c * 4],
      strides: [c * 4, 0, 0, 0, 0, 0],
      countArg: 4,
      partialArgs: 0b1100,
    };
    sums = runRows(backend, loops, call, rows, rows * c, 2 * c);
  } else {
    sums = new Float64Array(2 * c);
    const xs = view(backend, x);
    for (let r = 0, i = 0; r < rows; r++) {
      for (let k = 0; k < c; k++, i++) {
        const d = xs[i] - shift[k];
        sums[k] += d;
        sums[c + k] += d * d;
      }
    }
  }
  release(backend, shiftInfo);
  const [mean, variance] = [allocate(backend, [c]), allocate(backend, [c])];
  const [m, v] = [view(backend, mean), view(backend, variance)];
  for (let k = 0; k < c; k++) {
    const shiftedMean = sums[k] / rows;
    m[k] = shift[k] + shiftedMean;
    v[k] = Math.max(0, sums[c + k] / rows - shiftedMean * shiftedMean);
  }
  return [mean, variance];
}

/** The cpu backend's Step: 1 where x > 0, 0 where not, NaN where x is NaN. */
const step = (x: number) => (Number.isNaN(x) ? x : x > 0 ? 1 : 0);

/** dy * step(x): the SIMD loop over the whole 16-byte-aligned length, the cpu backend's rule for the rest. */
function reluGrad({ inputs, backend }: KernelArgs): TensorInfo {
  const { dy, x } = inputs;
  const n = x.shape.reduce((a, b) => a * b, 1);
  const out = allocate(backend, x.shape.slice());
  const loops = simdLoops(backend.wasm.sharedMemory);
  const vectorised = loops ? n - (n % 4) : 0;
  if (loops && vectorised > 0) loops.relugrad(byteOffset(backend, dy), byteOffset(backend, x), byteOffset(backend, out), vectorised * 4);
  const [d, xs, o] = [view(backend, dy), view(backend, x), view(backend, out)];
  for (let i = vectorised; i < n; i++) o[i] = d[i] * step(xs[i]);
  return out;
}

/** [dy * step(y), its per-channel sums], channels last; partial sums in float32, totals in float64. */
function reluGradChannelSums({ inputs, backend }: KernelArgs): TensorInfo[] {
  const { dy, y } = inputs;
  const c = y.shape[y.shape.length - 1];
  const rows = y.shape.reduce((a, b) => a * b, 1) / c;
  const masked = allocate(backend, y.shape.slice());
  const sums = allocate(backend, [c]);
  const loops = simdLoops(backend.wasm.sharedMemory);
  let totals: Float64Array;
  if (loops && c % 4 === 0) {
    // relugradsums(dy, y, masked, sums, rows, colsBytes), sums in the thread's partial sums.
    const call: RowCall = {
      loop: 'relugradsums',
      args: [byteOffset(backend, dy), byteOffset(backend, y), byteOffset(backend, masked), 0, 0, c * 4],
      strides: [c * 4, c * 4, c * 4, 0, 0, 0],
      countArg: 4,
      partialArgs: 0b1000,
    };
    totals = runRows(backend, loops, call, rows, rows * c, c);
  } else {
    totals = new Float64Array(c);
    const [d, ys, out] = [view(backend, dy), view(backend, y), view(backend, masked)];
    for (let r = 0, i = 0; r < rows; r++) {
      for (let k = 0; k < c; k++, i++) totals[k] += out[i] = d[i] * step(ys[i]);
    }
  }
  view(backend, sums).set(totals);
  return [masked, sums];
}

/** Adam's update of one variable (../fused/adam.ts): the SIMD loop, and float32 steps in tfjs's order for a tail. */
function adam({ inputs, backend, attrs }: KernelArgs): TensorInfo[] {
  const { value, gradient, m, v } = inputs;
  const n = value.shape.reduce((a, b) => a * b, 1);
  const outs = [0, 1, 2].map(() => allocate(backend, value.shape.slice()));
  const params = allocate(backend, [8]);
  const p = (attrs.params as number[]).map(Math.fround);
  view(backend, params).set(p);
  const loops = simdLoops(backend.wasm.sharedMemory);
  const vectorised = loops ? n - (n % 4) : 0;
  if (loops && vectorised > 0) {
    const [w2, m2, v2] = outs.map((o) => byteOffset(backend, o));
    const at = (t: TensorInfo) => byteOffset(backend, t);
    loops.adam(at(value), at(gradient), at(m), at(v), w2, m2, v2, vectorised * 4, byteOffset(backend, params));
  }
  const [w, g, m0, v0] = [value, gradient, m, v].map((t) => view(backend, t));
  const [w2, m2, v2] = outs.map((o) => view(backend, o));
  const [b1, omb1, b2, omb2, c1, c2, eps, negLr] = p;
  const f = Math.fround;
  for (let i = vectorised; i < n; i++) {
    m2[i] = f(f(m0[i] * b1) + f(g[i] * omb1));
    v2[i] = f(f(v0[i] * b2) + f(f(g[i] * g[i]) * omb2));
    w2[i] = f(f(f(f(m2[i] / c1) / f(f(Math.sqrt(f(v2[i] / c2))) + eps)) * negLr) + w[i]);
  }
  release(backend, params);
  return outs;
}

export const FUSED_TRAINING_KERNELS: Array<[string, (args: KernelArgs) => TensorInfo | TensorInfo[]]> = [
  [BATCH_NORM_TRAIN_GRAD, (args) => batchNormTrainGrad(args)],
  [BATCH_NORM_TRAIN_GRAD_RELU, (args) => batchNormTrainGrad(args, true)],
  [BATCH_NORM_MOMENTS, batchNormMoments],
  [FUSED_RELU_GRAD, reluGrad],
  [RELU_GRAD_CHANNEL_SUMS, reluGradChannelSums],
  [FUSED_ADAM, adam],
];
