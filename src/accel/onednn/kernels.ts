/**
 * The adapters from tfjs kernels to the addon's functions: each checks that the addon takes its inputs (float32,
 * NHWC, supported broadcasts and activations) and otherwise calls the CPU kernel it replaces.
 */
import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon';
import { uninitialised, uninitialisedInt32 } from './buffers';
import { type Attrs, type Backend, type Info, type KernelArgs, type NativeKernel, allFloat32, output, size, values } from './common';
import { Activation, BinaryOp, Broadcast, SumMode, UnaryOp } from './ops';

/** ConvGeom in accel/onednn/src/common.h: N H W C OH OW OC KH KW SH SW DH DW PT PL PB PR depthMult. */
function convGeom(info: tf.backend_util.Conv2DInfo, depthwise: boolean): Int32Array {
  const p = info.padInfo;
  // oneDNN wants out = (in + padL + padR - effectiveFilter) / stride + 1 exactly; tfjs's rounding
  // modes can leave padInfo's bottom/right inconsistent with that, so derive them from the output.
  const bottom = (info.outHeight - 1) * info.strideHeight + info.effectiveFilterHeight - info.inHeight - p.top;
  const right = (info.outWidth - 1) * info.strideWidth + info.effectiveFilterWidth - info.inWidth - p.left;
  return Int32Array.from([
    ...imageFields(info),
    info.outChannels,
    ...windowFields(info),
    bottom,
    right,
    depthwise ? info.outChannels / info.inChannels : 0,
  ]);
}

/** Pool geometry (PoolGeom in accel/onednn/src/pool.cc): N H W C OH OW KH KW SH SW DH DW PT PL. */
function poolGeom(info: tf.backend_util.Conv2DInfo): Int32Array {
  return Int32Array.from([...imageFields(info), ...windowFields(info)]);
}

/** N H W C OH OW: the leading fields of both geometries. */
function imageFields(info: tf.backend_util.Conv2DInfo): number[] {
  return [info.batchSize, info.inHeight, info.inWidth, info.inChannels, info.outHeight, info.outWidth];
}

/** KH KW SH SW DH DW PT PL: the window, its stride and dilation, and the top/left padding. */
function windowFields(info: tf.backend_util.Conv2DInfo): number[] {
  const { filterHeight, filterWidth, strideHeight, strideWidth, dilationHeight, dilationWidth, padInfo } = info;
  return [filterHeight, filterWidth, strideHeight, strideWidth, dilationHeight, dilationWidth, padInfo.top, padInfo.left];
}

function isNHWC(attrs: Attrs | undefined): boolean {
  const f = attrs?.dataFormat;
  return f === undefined || f === 'NHWC' || f === 'channelsLast';
}

/** The activation the addon fuses for a kernel's attributes; undefined when it cannot fuse it. */
function activationCode(activation: unknown, prelu: Info | undefined): Activation | undefined {
  if (prelu !== undefined) return undefined;
  if (activation === undefined || activation === 'linear') return Activation.None;
  if (activation === 'relu') return Activation.Relu;
  return undefined;
}

function convForward(a: NativeAddon, depthwise: boolean, fused: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x, filter, bias, preluActivationWeights } = inputs;
    const act = fused ? activationCode(attrs?.activation, preluActivationWeights) : Activation.None;
    if (act === undefined || !isNHWC(attrs) || !allFloat32(x, filter, bias) || x.shape.length !== 4) {
      return fallback();
    }
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filter.shape as [number, number, number, number],
      attrs!.strides as number | [number, number],
      (attrs!.dilations ?? 1) as number | [number, number],
      attrs!.pad as 'same' | 'valid' | number,
      attrs!.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
      depthwise,
    );
    if (bias !== undefined && size(bias.shape) !== info.outChannels) {
      return fallback();
    }
    const y = uninitialised(size(info.outShape));
    a.convForward(values(backend, x), values(backend, filter), bias ? values(backend, bias) : null, y, convGeom(info, depthwise), act);
    return output(backend, info.outShape, y);
  };
}

/** The convolution geometry a backprop kernel's attributes describe (tfjs passes no dilation for plain conv grads). */
function backpropConvInfo(
  inputShape: number[],
  filterShape: number[],
  attrs: NonNullable<KernelArgs['attrs']>,
  depthwise: boolean,
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    inputShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides as number | [number, number],
    (depthwise ? (attrs.dilations ?? 1) : 1) as number | [number, number],
    attrs.pad as 'same' | 'valid' | number,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
    depthwise,
  );
}

function convBackpropInput(a: NativeAddon, depthwise: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { dy, filter } = inputs;
    if (!isNHWC(attrs) || !allFloat32(dy, filter)) return fallback();
    const inputShape = attrs!.inputShape as [number, number, number, number];
    const info = backpropConvInfo(inputShape, filter.shape, attrs!, depthwise);
    const dx = uninitialised(size(inputShape));
    a.convBackwardData(values(backend, dy), values(backend, filter), dx, convGeom(info, depthwise));
    return output(backend, [...inputShape], dx);
  };
}

/** A depthwise 3x3 filter (one per channel) with stride 1 and 'same' padding: the separable layers' own. */
function depthwise3x3Same(info: tf.backend_util.Conv2DInfo): boolean {
  const { filterHeight, filterWidth, strideHeight, strideWidth, dilationHeight, dilationWidth, padInfo } = info;
  return (
    info.outChannels === info.inChannels &&
    [filterHeight, filterWidth].every((k) => k === 3) &&
    [strideHeight, strideWidth, dilationHeight, dilationWidth].every((d) => d === 1) &&
    [padInfo.top, padInfo.left, padInfo.bottom, padInfo.right].every((p) => p === 1)
  );
}

function convBackpropFilter(a: NativeAddon, depthwise: boolean): NativeKernel {
  // The separable layers' depthwise filter gradient: with vectors narrower than AVX-512's, our loop where they
  // divide the channels (accel/onednn/src/separable.cc). In the seed model's training step on a 2-core Xeon capped at
  // AVX2 it took 9.4-10.7 ms a step against oneDNN's 12.0-12.4; with AVX-512 oneDNN's was the faster (7.3-7.8 ms
  // against 8.9-9.6), though ours won timed alone. Decided once: an addon built before the loop lacks it.
  const ownDepthwiseGrad = depthwise && typeof a.depthwiseFilterGrad3x3 === 'function' && a.vectorLanes() < 16;
  return ({ inputs, backend, attrs }, fallback) => {
    const { x, dy } = inputs;
    if (!isNHWC(attrs) || !allFloat32(x, dy)) return fallback();
    const filterShape = attrs!.filterShape as [number, number, number, number];
    const info = backpropConvInfo(x.shape, filterShape, attrs!, depthwise);
    const dw = uninitialised(size(filterShape));
    const [xv, dyv] = [values(backend, x), values(backend, dy)];
    const own = ownDepthwiseGrad && depthwise3x3Same(info) && a.depthwiseFilterGrad3x3!(xv, dyv, dw, Int32Array.from(x.shape));
    if (!own) a.convBackwardWeights(xv, dyv, dw, convGeom(info, depthwise));
    return output(backend, [...filterShape], dw);
  };
}

function poolInfo(shape: number[], attrs: Attrs): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computePool2DInfo(
    shape as [number, number, number, number],
    attrs.filterSize as number | [number, number],
    attrs.strides as number | [number, number],
    1,
    attrs.pad as 'same' | 'valid' | number,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
}

function maxPool(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x } = inputs;
    if (!allFloat32(x) || x.shape.length !== 4) return fallback();
    const info = poolInfo(x.shape, attrs!);
    const y = uninitialised(size(info.outShape));
    a.maxPool(values(backend, x), y, poolGeom(info));
    return output(backend, info.outShape, y);
  };
}

function maxPoolGrad(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { dy, input, output: y } = inputs;
    if (!y || !allFloat32(dy, input, y)) return fallback();
    const info = poolInfo(input.shape, attrs!);
    const dx = uninitialised(size(input.shape));
    a.maxPoolGrad(values(backend, dy), values(backend, input), values(backend, y), dx, poolGeom(info));
    return output(backend, [...input.shape], dx);
  };
}

/**
 * RELU_FILTER_GRAD_ONE_CHANNEL (fused/conv-layers.ts): a one-channel conv + bias + ReLU layer's filter and bias
 * gradients from dy and the layer's output y, the ReLU mask applied on the fly.
 */
export function reluFilterGradOneChannel(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { x, dy, y } = inputs;
    const filterShape = attrs!.filterShape as [number, number, number, number];
    const info = backpropConvInfo(x.shape, filterShape, attrs!, false);
    const dw = uninitialised(size(filterShape));
    const sums = new Float32Array(info.outChannels);
    a.reluFilterGradOneChannel(values(backend, x), values(backend, dy), values(backend, y), dw, sums, convGeom(info, false));
    return [output(backend, [...filterShape], dw), output(backend, [info.outChannels], sums)];
  };
}

/**
 * SEPARABLE_CONV_BIAS_RELU (fused/conv-layers.ts): a separable layer's depthwise 3x3 (stride 1, 'same') and its 1x1
 * + bias + ReLU in one pass (accel/onednn/src/separable.cc). Where the build's vectors do not divide the channels, the
 * two convolutions run one after the other, as the layer otherwise would.
 */
export function separableConvBiasRelu(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { x, depthwiseFilter, pointwiseFilter, bias } = inputs;
    const [n, h, w, ci] = x.shape;
    const co = pointwiseFilter.shape[3];
    const y = uninitialised(n * h * w * co);
    const [xv, dwv, pwv, bv] = [x, depthwiseFilter, pointwiseFilter, bias].map((t) => values(backend, t));
    if (!a.separableConvBiasRelu(xv, dwv, pwv, bv, y, Int32Array.from([n, h, w, ci, co]))) {
      const same = (filter: Info, depthwise: boolean) =>
        convGeom(tf.backend_util.computeConv2DInfo(x.shape as never, filter.shape as never, 1, 1, 'same', undefined, depthwise), depthwise);
      const depthwise = uninitialised(size(x.shape));
      a.convForward(xv, dwv, null, depthwise, same(depthwiseFilter, true), Activation.None);
      a.convForward(depthwise, pwv, bv, y, same(pointwiseFilter, false), Activation.Relu);
    }
    return output(backend, [n, h, w, co], y);
  };
}

/** STANDARDIZE_IMAGES (src/model/normalization.ts): each image of a batch to zero mean and unit variance, in one kernel. */
export function standardizeImages(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { x } = inputs;
    const y = uninitialised(size(x.shape));
    a.standardizeImages(values(backend, x), y, x.shape[0]);
    return output(backend, x.shape, y);
  };
}

/**
 * tf.image.transform with bilinear interpolation, 'nearest' fill and affine transforms (the augmentation's warps;
 * accel/onednn/src/image.cc). With it, augment.ts uses tfjs ops on `native` as on wasm, instead of its JavaScript
 * warp (tfjs's CPU Transform, which `native` otherwise inherits, warps only a batch's first image).
 */
function transform(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { image, transforms } = inputs;
    if (attrs?.interpolation !== 'bilinear' || attrs?.fillMode !== 'nearest' || !allFloat32(image, transforms)) return fallback();
    if (image.shape.length !== 4 || transforms.shape.length !== 2 || transforms.shape[1] !== 8) return fallback();
    const [n, h, w, c] = image.shape;
    if (transforms.shape[0] !== 1 && transforms.shape[0] !== n) return fallback();
    const t = values(backend, transforms);
    for (let i = 0; i < t.length; i += 8) if (t[i + 6] !== 0 || t[i + 7] !== 0) return fallback(); // projective
    const [oh, ow] = (attrs.outputShape as [number, number] | null | undefined) ?? [h, w];
    const y = uninitialised(n * oh * ow * c);
    a.warpBilinearNearest(values(backend, image), t, y, Int32Array.from([n, h, w, c, oh, ow]));
    return output(backend, [n, oh, ow, c], y);
  };
}

/** MAX_POOL_GRAD_RELU (fused/pool-layers.ts): MaxPoolGrad times step(input), and its per-channel sums. */
export function maxPoolGradRelu(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { dy, input, output: y } = inputs;
    const info = poolInfo(input.shape, attrs!);
    const dx = uninitialised(size(input.shape));
    const sums = new Float32Array(info.inChannels);
    a.maxPoolGradRelu(values(backend, dy), values(backend, input), values(backend, y), dx, sums, poolGeom(info));
    return [output(backend, [...input.shape], dx), output(backend, [info.inChannels], sums)];
  };
}

/** Batch dims of a and b when the addon can handle them (equal, or one side a single batch). */
function matMulBatches(aShape: number[], bShape: number[]): { batchA: number; batchB: number; outer: number[] } | undefined {
  const outerA = aShape.slice(0, -2);
  const outerB = bShape.slice(0, -2);
  const batchA = size(outerA);
  const batchB = size(outerB);
  if (batchA === 1) return { batchA, batchB, outer: outerB.length >= outerA.length ? outerB : outerA };
  if (batchB === 1) return { batchA, batchB, outer: outerA.length >= outerB.length ? outerA : outerB };
  if (outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i])) {
    return { batchA, batchB, outer: outerA };
  }
  return undefined;
}

function matMul(a: NativeAddon, fused: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { a: lhs, b: rhs, bias, preluActivationWeights } = inputs;
    const act = fused ? activationCode(attrs?.activation, preluActivationWeights) : Activation.None;
    const batches = matMulBatches(lhs.shape, rhs.shape);
    const transA = Boolean(attrs?.transposeA);
    const transB = Boolean(attrs?.transposeB);
    const m = transA ? lhs.shape[lhs.shape.length - 1] : lhs.shape[lhs.shape.length - 2];
    const k = transA ? lhs.shape[lhs.shape.length - 2] : lhs.shape[lhs.shape.length - 1];
    const n = transB ? rhs.shape[rhs.shape.length - 2] : rhs.shape[rhs.shape.length - 1];
    const biasOk = bias === undefined || (size(bias.shape) === n && bias.shape[bias.shape.length - 1] === n);
    if (act === undefined || !batches || !biasOk || !allFloat32(lhs, rhs, bias) || lhs.shape.length < 2 || rhs.shape.length < 2) {
      return fallback();
    }
    const outShape = [...batches.outer, m, n];
    const c = uninitialised(size(outShape));
    a.matMul(
      values(backend, lhs),
      values(backend, rhs),
      c,
      bias ? values(backend, bias) : null,
      Int32Array.from([batches.batchA, batches.batchB, m, k, n, transA ? 1 : 0, transB ? 1 : 0]),
      act,
    );
    return output(backend, outShape, c);
  };
}

/** How one operand of a broadcasting binary op maps onto the output, with the block size it needs. */
function broadcastMode(shape: number[], out: number[]): { mode: Broadcast; inner?: number } | undefined {
  const n = size(shape);
  if (n === size(out)) return { mode: Broadcast.Full };
  if (n === 1) return { mode: Broadcast.Scalar };
  const padded = [...new Array(out.length - shape.length).fill(1), ...shape];
  const first = padded.findIndex((d) => d !== 1);
  if (padded.slice(first).every((d, i) => d === out[first + i])) {
    return { mode: Broadcast.PerElementOfBlock, inner: size(out.slice(first)) };
  }
  let last = padded.length - 1;
  while (padded[last] === 1) last--;
  if (padded.slice(0, last + 1).every((d, i) => d === out[i])) {
    return { mode: Broadcast.PerBlock, inner: size(out.slice(last + 1)) };
  }
  return undefined;
}

function binary(a: NativeAddon, op: BinaryOp): NativeKernel {
  return ({ inputs, backend }, fallback) => {
    const { a: lhs, b: rhs } = inputs;
    if (!allFloat32(lhs, rhs)) return fallback();
    const outShape = tf.backend_util.assertAndGetBroadcastShape(lhs.shape, rhs.shape);
    const n = size(outShape);
    const ma = broadcastMode(lhs.shape, outShape);
    const mb = broadcastMode(rhs.shape, outShape);
    if (!ma || !mb || (ma.inner !== undefined && mb.inner !== undefined && ma.inner !== mb.inner)) return fallback();
    const inner = ma.inner ?? mb.inner ?? Math.max(n, 1);
    const y = uninitialised(n);
    if (n > 0) a.binary(op, values(backend, lhs), ma.mode, values(backend, rhs), mb.mode, y, n / inner, inner);
    return output(backend, outShape, y);
  };
}

function unary(a: NativeAddon, op: UnaryOp): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x } = inputs;
    if (!allFloat32(x)) return fallback();
    const y = uninitialised(size(x.shape));
    a.unary(op, values(backend, x), y, Number(attrs?.alpha ?? 0));
    return output(backend, [...x.shape], y);
  };
}

function clipByValue(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x } = inputs;
    if (!allFloat32(x)) return fallback();
    const y = uninitialised(size(x.shape));
    a.clip(values(backend, x), y, Number(attrs!.clipValueMin), Number(attrs!.clipValueMax));
    return output(backend, [...x.shape], y);
  };
}

/** Sum or mean over leading or trailing axes (batch-norm statistics, bias gradients, losses). */
function reduce(a: NativeAddon, mean: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x } = inputs;
    if (!allFloat32(x) || x.shape.length === 0) return fallback();
    const rank = x.shape.length;
    const axes = tf.util.parseAxisParam((attrs?.axis ?? null) as number | number[], x.shape).sort((p, q) => p - q);
    if (new Set(axes).size !== axes.length || axes.length === 0) return fallback();
    const leading = axes.every((ax, i) => ax === i);
    const trailing = axes.every((ax, i) => ax === rank - axes.length + i);
    if (!leading && !trailing) return fallback();
    const reduced = size(axes.map((ax) => x.shape[ax]));
    const kept = size(x.shape) / Math.max(reduced, 1);
    const outShape = attrs?.keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    if (reduced === 0) return fallback();
    const y = uninitialised(kept);
    const scale = mean ? 1 / reduced : 1;
    if (trailing) a.sum(values(backend, x), y, SumMode.Trailing, kept, reduced, scale);
    else a.sum(values(backend, x), y, SumMode.LeadingRows, reduced, kept, scale);
    return output(backend, outShape, y);
  };
}

function tile(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x } = inputs;
    const reps = attrs?.reps as number[];
    if (!allFloat32(x) || x.shape.length === 0 || size(x.shape) === 0) return fallback();
    const outShape = x.shape.map((d, i) => d * reps[i]);
    const y = uninitialised(size(outShape));
    if (y.length > 0) a.tile(values(backend, x), y, Int32Array.from(x.shape), Int32Array.from(outShape));
    return output(backend, outShape, y);
  };
}

/** A batch-norm's four per-channel vectors (mean 0, variance 1, scale 1, offset 0 where one is absent); undefined where one is neither per-channel nor a scalar. */
function batchNormVectors(backend: Backend, inputs: Record<string, Info>, channels: number): Float32Array[] | undefined {
  const perChannel = (t: Info | undefined, fill: number): Float32Array | undefined => {
    if (t === undefined) return new Float32Array(channels).fill(fill);
    const v = values(backend, t);
    if (v.length === channels) return v;
    return v.length === 1 ? new Float32Array(channels).fill(v[0]) : undefined;
  };
  const { mean, variance, scale, offset } = inputs;
  const vectors = [perChannel(mean, 0), perChannel(variance, 1), perChannel(scale, 1), perChannel(offset, 0)];
  return channels > 0 && vectors.every((v) => v !== undefined) ? (vectors as Float32Array[]) : undefined;
}

/** FusedBatchNorm when every statistic has one value per channel (last axis) or a single value. */
function batchNorm(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, fallback) => {
    const { x, mean, variance, scale, offset } = inputs;
    if (!allFloat32(x, mean, variance, scale, offset) || x.shape.length === 0) return fallback();
    const vectors = batchNormVectors(backend, inputs, x.shape[x.shape.length - 1]);
    if (!vectors) return fallback();
    const [m, v, sc, off] = vectors;
    const y = uninitialised(size(x.shape));
    a.batchNorm(values(backend, x), m, v, sc, off, Number(attrs?.varianceEpsilon ?? 0.001), y);
    return output(backend, [...x.shape], y);
  };
}

/** The max pooling's geometry over `shape` from a fused kernel's poolSize, poolStrides and poolPad attributes. */
function pooling(shape: number[], attrs: Attrs): tf.backend_util.Conv2DInfo {
  return poolInfo(shape, { filterSize: attrs.poolSize, strides: attrs.poolStrides, pad: attrs.poolPad });
}

/** The conv and pooling geometry of the fused conv + pooling kernels: x's and the filter's shapes and the attrs. */
function convPoolInfo(xShape: number[], filterShape: number[], attrs: Attrs) {
  const conv = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides as number | [number, number],
    1,
    attrs.pad as 'same' | 'valid',
  );
  return { conv, pool: pooling(conv.outShape, attrs) };
}

/** The codes of a fused training pair (int32 storage, two 16-bit codes an element: accel/onednn/src/pool.h). */
function codesOf(backend: Backend, t: Info): Int32Array {
  const v = backend.data.get(t.dataId).values;
  if (!(v instanceof Int32Array)) throw new Error('the fused layer + pooling codes must be int32 storage');
  return v;
}

/** The codes of a pooled output of shape [n, h, w, c] as a tensor: int32 [n, h, w, c / 2]. */
function codesOutput(backend: Backend, pooledShape: number[], codes: Int32Array): Info {
  const [n, h, w, c] = pooledShape;
  return backend.makeTensorInfo([n, h, w, c / 2], 'int32', codes);
}

/**
 * CONV_BIAS_RELU_MAX_POOL (fused/inference.ts): a conv + bias + ReLU and the max pooling after it
 * (convForwardMaxPool in accel/onednn/src/conv.cc); withCodes, CONV_BIAS_RELU_MAX_POOL_TRAIN (fused/train-pairs.ts):
 * also the codes that stand in for the ReLU's output in the gradient.
 */
export function convBiasReluMaxPool(a: NativeAddon, withCodes = false): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { x, filter, bias } = inputs;
    const { conv, pool } = convPoolInfo(x.shape, filter.shape, attrs!);
    const y = uninitialised(size(pool.outShape));
    const codes = withCodes ? uninitialisedInt32(size(pool.outShape) / 2) : undefined;
    const [xv, fv, bv] = [x, filter, bias].map((t) => values(backend, t));
    a.convForwardMaxPool(xv, fv, bv, y, convGeom(conv, false), poolGeom(pool), Activation.Relu, codes);
    const pooled = output(backend, pool.outShape, y);
    return codes ? [pooled, codesOutput(backend, pool.outShape, codes)] : pooled;
  };
}

export const convBiasReluMaxPoolTrain = (a: NativeAddon): NativeKernel => convBiasReluMaxPool(a, true);

/** CONV_POOLED_GRAD_INPUT: the convolution's input gradient from the pooling's dy and codes. */
export function convPooledGradInput(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { dy, codes, filter } = inputs;
    const inputShape = attrs!.inputShape as number[];
    const { conv, pool } = convPoolInfo(inputShape, filter.shape, attrs!);
    const dx = uninitialised(size(inputShape));
    a.convBackwardDataPooled(
      values(backend, dy),
      codesOf(backend, codes),
      values(backend, filter),
      dx,
      convGeom(conv, false),
      poolGeom(pool),
    );
    return output(backend, [...inputShape], dx);
  };
}

/** CONV_POOLED_GRAD_FILTER: the convolution's filter gradient from its input and the pooling's dy and codes. */
export function convPooledGradFilter(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { x, dy, codes } = inputs;
    const filterShape = attrs!.filterShape as number[];
    const { conv, pool } = convPoolInfo(x.shape, filterShape, attrs!);
    const dw = uninitialised(size(filterShape));
    a.convBackwardWeightsPooled(
      values(backend, x),
      values(backend, dy),
      codesOf(backend, codes),
      dw,
      convGeom(conv, false),
      poolGeom(pool),
    );
    return output(backend, [...filterShape], dw);
  };
}

/** POOLED_RELU_GRAD_SUMS: the bias gradient (the masked gradient's per-channel sums) from the pooling's dy and codes. */
export function pooledReluGradSums(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { dy, codes } = inputs;
    const { pool } = convPoolInfo(attrs!.inputShape as number[], attrs!.filterShape as number[], attrs!);
    const sums = new Float32Array(pool.inChannels);
    a.pooledReluGradSums(values(backend, dy), codesOf(backend, codes), sums, poolGeom(pool));
    return output(backend, [pool.inChannels], sums);
  };
}

/** BATCH_NORM_MAX_POOL (fused/inference.ts): an inference-mode batch-norm and the max pooling after it, in one pass. */
export function batchNormMaxPool(a: NativeAddon, withCodes = false): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { x } = inputs;
    const vectors = batchNormVectors(backend, inputs, x.shape[3]);
    if (!vectors) throw new Error('BatchNormMaxPool: the statistics must hold one value per channel, or one for all');
    const [m, v, sc, off] = vectors;
    const pool = pooling(x.shape, attrs!);
    const y = uninitialised(size(pool.outShape));
    const codes = withCodes ? uninitialisedInt32(size(pool.outShape) / 2) : undefined;
    a.batchNormMaxPool(values(backend, x), m, v, sc, off, Number(attrs!.varianceEpsilon), y, poolGeom(pool), codes);
    const pooled = output(backend, pool.outShape, y);
    return codes ? [pooled, codesOutput(backend, pool.outShape, codes)] : pooled;
  };
}

/**
 * BATCH_NORM_MAX_POOL_TRAIN (fused/batchnorm.ts): BATCH_NORM_MAX_POOL with the batch's statistics, and the codes
 * from which the batch-norm's gradient (onednn/batchnorm.ts) reads the pooling's.
 */
export const batchNormMaxPoolTrain = (a: NativeAddon): NativeKernel => batchNormMaxPool(a, true);

/**
 * The batch-norm gradient's arguments for a dy that is the gradient of BATCH_NORM_MAX_POOL_TRAIN's pooling (attrs
 * inputShape and the pooling's): its codes and the pooling's geometry (onednn/batchnorm.ts).
 */
export function pooledGradArgs(backend: Backend, codes: Info, attrs: Attrs): [Int32Array, Int32Array] {
  return [codesOf(backend, codes), poolGeom(pooling(attrs.inputShape as number[], attrs))];
}

/** The kernels the addon accelerates; every other CPU kernel is registered unchanged. */
export function nativeKernels(a: NativeAddon): Record<string, NativeKernel> {
  return {
    [tf.Conv2D]: convForward(a, false, false),
    [tf.FusedConv2D]: convForward(a, false, true),
    [tf.Conv2DBackpropInput]: convBackpropInput(a, false),
    [tf.Conv2DBackpropFilter]: convBackpropFilter(a, false),
    [tf.DepthwiseConv2dNative]: convForward(a, true, false),
    [tf.FusedDepthwiseConv2D]: convForward(a, true, true),
    [tf.DepthwiseConv2dNativeBackpropInput]: convBackpropInput(a, true),
    [tf.DepthwiseConv2dNativeBackpropFilter]: convBackpropFilter(a, true),
    [tf.MaxPool]: maxPool(a),
    [tf.MaxPoolGrad]: maxPoolGrad(a),
    [tf.Transform]: transform(a),
    [tf.ClipByValue]: clipByValue(a),
    [tf.BatchMatMul]: matMul(a, false),
    [tf._FusedMatMul]: matMul(a, true),
    [tf.Add]: binary(a, BinaryOp.Add),
    [tf.Sub]: binary(a, BinaryOp.Sub),
    [tf.Multiply]: binary(a, BinaryOp.Mul),
    [tf.RealDiv]: binary(a, BinaryOp.Div),
    [tf.SquaredDifference]: binary(a, BinaryOp.SquaredDiff),
    [tf.Relu]: unary(a, UnaryOp.Relu),
    [tf.Step]: unary(a, UnaryOp.Step),
    [tf.Sqrt]: unary(a, UnaryOp.Sqrt),
    [tf.Square]: unary(a, UnaryOp.Square),
    [tf.Rsqrt]: unary(a, UnaryOp.Rsqrt),
    [tf.Neg]: unary(a, UnaryOp.Neg),
    [tf.Floor]: unary(a, UnaryOp.Floor),
    [tf.Sum]: reduce(a, false),
    [tf.Mean]: reduce(a, true),
    [tf.Tile]: tile(a),
    [tf.FusedBatchNorm]: batchNorm(a),
  };
}
