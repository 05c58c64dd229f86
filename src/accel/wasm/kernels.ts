/**
 * Training kernels for the tfjs wasm backend.
 *
 * tfjs-backend-wasm 4.22 cannot train a conv net: Conv2DBackpropFilter and the depthwise backprop
 * kernels are missing (tfjs issue 8474) and its Conv2DBackpropInput is a naive loop. These kernels
 * express the gradients through the backend's fast XNNPACK convolution / matmul where the geometry
 * allows (stride 1, the case every conv in our models uses) and through plain loops otherwise
 * (strided convs: correct, not tuned).
 *
 * Filter gradient, stride 1: with x zero-padded onto a grid of hp x wp pixels (hp = outH + dilated
 * filter height - 1) and dy laid on the same grid (zeros outside outH x outW), the input pixel a tap
 * (i, j) reads for grid position p is position p + (i*dh*wp + j*dw). So for every tap,
 *   dW[i, j] = dyGridᵀ[co, P] · xGrid[P + shift, ci]
 * is one matmul over a shifted window of the same buffer: no im2col copy.
 * Input gradient, stride 1: a convolution of dy with the spatially flipped, in/out-swapped filter.
 * Block 1's 16 -> 16 3x3 convolution takes Winograd's algorithm instead (winograd.ts), for both gradients and for its
 * forward pass (FusedConv2D).
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import {
  WasmBackend,
  allocate,
  alias,
  byteOffset,
  copyIntoGrid,
  forEachGridRow,
  type GridPlacement,
  release,
  releaseAlias,
  reshaped,
  runKernel,
  runRows,
  twoThreadSums,
  view,
} from './heap';
import { KernelArgs, callStock, rememberStock } from './stock';
import { FAST_OP_KERNELS } from './fast-ops';
import { FUSED_TRAINING_KERNELS, maskedByRelu } from './fused';
import { installFusedBatchNorm } from '../fused/batchnorm';
import { installFusedConvLayers, registerConvBiasRelu } from '../fused/conv-layers';
import { MAX_POOL_GRAD_RELU } from '../fused/pool-layers';
import { installBackendFusedAdam } from '../fused/adam';
import { installFusedReluGradient } from '../fused/gradients';
import { SimdLoops, simdLoops } from './simd';
import { type RowCall, runFilterGradJob } from './row-jobs';
import { winogradConv, winogradFilter, winogradFilterGrad, winogradFits } from './winograd';

const { backend_util } = tf;
type Conv2DInfo = ReturnType<typeof backend_util.computeConv2DInfo>;

function requireChannelsLast(info: Conv2DInfo, kernel: string): void {
  if (info.dataFormat !== 'channelsLast') {
    throw new Error(`wasm ${kernel} supports dataFormat 'NHWC' only; got '${info.dataFormat}'.`);
  }
}

function requireFloat32(kernel: string, ...infos: TensorInfo[]): void {
  for (const t of infos) {
    if (t.dtype !== 'float32') throw new Error(`wasm ${kernel} supports float32 only; got ${t.dtype}.`);
  }
}

type ExplicitPadding = [[number, number], [number, number], [number, number], [number, number]];
type PadAttr = ExplicitPadding | 'valid' | 'same' | number;

function conv2dInfo(
  inShape: number[],
  filterShape: number[],
  attrs: NamedAttrMap,
  depthwise: boolean,
  dilations: number | [number, number] = 1,
): Conv2DInfo {
  return backend_util.computeConv2DInfo(
    inShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides as number | [number, number],
    dilations,
    attrs.pad as PadAttr,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
    depthwise,
    backend_util.convertConv2DDataFormat((attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC'),
  );
}

/** Grid geometry shared by the stride-1 filter-gradient paths (positions = batch x hp x wp). */
function strideOneGrid(info: Conv2DInfo) {
  const hp = info.outHeight + (info.filterHeight - 1) * info.dilationHeight;
  const wp = info.outWidth + (info.filterWidth - 1) * info.dilationWidth;
  const slack = (info.filterHeight - 1) * info.dilationHeight * wp + (info.filterWidth - 1) * info.dilationWidth;
  return { hp, wp, slack, positions: info.batchSize * hp * wp };
}

/** x on the stride-1 grid: each image at its padding offset. */
function inputPlacement(info: Conv2DInfo): GridPlacement {
  const { hp, wp } = strideOneGrid(info);
  const { top, left } = info.padInfo;
  return { n: info.batchSize, h: info.inHeight, w: info.inWidth, c: info.inChannels, hp, wp, top, left };
}

/** dy on the same grid, at its origin. */
function gradPlacement(info: Conv2DInfo): GridPlacement {
  const { hp, wp } = strideOneGrid(info);
  return { n: info.batchSize, h: info.outHeight, w: info.outWidth, c: info.outChannels, hp, wp, top: 0, left: 0 };
}

/**
 * x laid channel-major on the padded grid: [ci, positions] plus `slack` zeros at the end, because a tap's
 * window (offset by up to `slack`) reads that far past the last row. Where a window crosses into the next
 * channel's row, dy on the grid is zero, so those products vanish.
 */
function inputOnGridChannelMajor(backend: WasmBackend, x: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { slack, positions } = strideOneGrid(info);
  const g = inputPlacement(info);
  if (slack === 0 && g.hp === g.h && g.wp === g.w && g.top === 0 && g.left === 0) {
    // 1x1 unpadded: the grid is x itself, only transposed.
    return runKernel('Transpose', backend, { x: reshaped(x, [positions, g.c]) }, { perm: [1, 0] });
  }
  return channelMajorGrid(backend, x, g, slack);
}

/** NHWC `src` -> [c, n*hp*wp] (+ `slack` zeros), each image placed on a zero grid as `g` says. */
function channelMajorGrid(backend: WasmBackend, srcInfo: TensorInfo, g: GridPlacement, slack: number): TensorInfo {
  const { c } = g;
  const positions = g.n * g.hp * g.wp;
  const out = allocate(backend, [c * positions + slack]);
  const src = view(backend, srcInfo);
  const dst = view(backend, out);
  if (c === 1) {
    copyIntoGrid(src, dst.subarray(0, positions), g);
    dst.fill(0, positions);
    return out;
  }
  dst.fill(0);
  forEachGridRow(g, (from, p, run) => {
    // One image row at a time, channel by channel: contiguous writes, reads from a row that stays in
    // cache (measured ~1.5x faster than scattering each pixel's channels across the channel rows).
    const s = from * c;
    for (let k = 0; k < c; k++) {
      const d = k * positions + p;
      for (let xx = 0, e = s + k; xx < run; xx++, e += c) dst[d + xx] = src[e];
    }
  });
  return out;
}

/** dy laid on the same grid (zeros where no output exists), as [positions, channels]. */
function gradOnGrid(backend: WasmBackend, dy: TensorInfo, info: Conv2DInfo) {
  const { hp, wp, positions } = strideOneGrid(info);
  const channels = info.outChannels;
  if (hp === info.outHeight && wp === info.outWidth) {
    return { grid: reshaped(dy, [positions, channels]), owned: false };
  }
  const grid = allocate(backend, [positions, channels]);
  copyIntoGrid(view(backend, dy), view(backend, grid), gradPlacement(info));
  return { grid, owned: true };
}

function conv2DBackpropFilterStrideOne(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: ci, outChannels: co } = info;
  const { wp, positions } = strideOneGrid(info);
  const xT = inputOnGridChannelMajor(backend, x, info);
  // dy on the grid is the matmul's right operand for every tap: XNNPACK packs it once and caches it by id.
  const dyg = gradOnGrid(backend, dy, info);
  const dw = allocate(backend, [fh, fw, ci, co]);
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      const shift = i * info.dilationHeight * wp + j * info.dilationWidth;
      const window = alias(backend, xT, shift, [ci, positions]);
      const tap = runKernel('BatchMatMul', backend, { a: window, b: dyg.grid }, { transposeA: false, transposeB: false });
      releaseAlias(backend, window);
      view(backend, dw).set(view(backend, tap), (i * fw + j) * ci * co); // [ci, co] is dW[i, j]'s layout
      release(backend, tap);
    }
  }
  release(backend, xT);
  if (dyg.owned) release(backend, dyg.grid);
  return dw;
}

/**
 * Walks every (output pixel, filter tap) pair whose input pixel lies inside the image, for any stride, padding and
 * dilation: the reference definition the loop kernels share. Pixels are flat NHW indices; taps are i * fw + j.
 */
function forEachWindowTap(info: Conv2DInfo, visit: (dyPixel: number, xPixel: number, tap: number) => void): void {
  const { batchSize, inHeight, inWidth, outHeight, outWidth } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dwl } = info;
  const { top, left } = info.padInfo;
  for (let b = 0; b < batchSize; b++) {
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        const dyPixel = (b * outHeight + oy) * outWidth + ox;
        for (let i = 0; i < fh; i++) {
          const iy = oy * sh + i * dh - top;
          if (iy < 0 || iy >= inHeight) continue;
          for (let j = 0; j < fw; j++) {
            const ix = ox * sw + j * dwl - left;
            if (ix < 0 || ix >= inWidth) continue;
            visit(dyPixel, (b * inHeight + iy) * inWidth + ix, i * fw + j);
          }
        }
      }
    }
  }
}

/** Direct loops for any stride/dilation: the reference definition, used where the fast path does not apply. */
function conv2DBackpropFilterLoops(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { inChannels: ci, outChannels: co, filterHeight: fh, filterWidth: fw } = info;
  const dw = allocate(backend, [fh, fw, ci, co]);
  const xs = view(backend, x);
  const dys = view(backend, dy);
  const out = view(backend, dw);
  out.fill(0);
  forEachWindowTap(info, (dyPixel, xPixel, tap) => {
    const dyBase = dyPixel * co;
    const xBase = xPixel * ci;
    const wBase = tap * ci * co;
    for (let c = 0; c < ci; c++) {
      const xv = xs[xBase + c];
      if (xv === 0) continue;
      const row = wBase + c * co;
      for (let o = 0; o < co; o++) out[row + o] += xv * dys[dyBase + o];
    }
  });
  return dw;
}

function conv2DBackpropFilter({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, dy } = inputs;
  requireFloat32('Conv2DBackpropFilter', x, dy);
  const info = conv2dInfo(x.shape, attrs.filterShape as number[], attrs, false);
  requireChannelsLast(info, 'Conv2DBackpropFilter');
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (loops && winogradFits(info)) return winogradFilterGrad(backend, loops, x, dy);
  if (info.strideHeight === 1 && info.strideWidth === 1 && info.outChannels % 16 === 0 && loops) {
    return denseFilterGradSimd(backend, x, dy, info, loops);
  }
  if (info.strideHeight === 1 && info.strideWidth === 1 && info.inChannels === 1 && info.outChannels % 4 === 0 && loops) {
    return singleChannelFilterGradSimd(backend, x, dy, info, attrs, loops);
  }
  return info.strideHeight === 1 && info.strideWidth === 1
    ? conv2DBackpropFilterStrideOne(backend, x, dy, info)
    : conv2DBackpropFilterLoops(backend, x, dy, info);
}

/**
 * One input channel (the first layer on grayscale images): dW[i, j, 0, o] = sum_p x[p + tap] * dy[p, o] is
 * a depthwise filter gradient of x repeated across the co channels. As 9 matmuls it ran at M = 1 with dy
 * packed each time; the SIMD depthwise loop does it in one pass over dy per output row.
 */
function singleChannelFilterGradSimd(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: Conv2DInfo,
  attrs: NamedAttrMap,
  loops: SimdLoops,
): TensorInfo {
  const { batchSize, inHeight, inWidth, outChannels: co, filterHeight: fh, filterWidth: fw } = info;
  const repeated = allocate(backend, [batchSize, inHeight, inWidth, co]);
  const src = view(backend, x);
  const dst = view(backend, repeated);
  for (let i = 0, d = 0; i < src.length; i++) {
    const v = src[i];
    for (let k = 0; k < co; k++) dst[d++] = v;
  }
  const depthwiseInfo = conv2dInfo(repeated.shape, [fh, fw, co, 1], attrs, true);
  const dw = depthwiseFilterGradSimd(backend, repeated, dy, depthwiseInfo, loops);
  release(backend, repeated);
  return reshaped(dw, [fh, fw, 1, co]); // [fh, fw, co, 1] and [fh, fw, 1, co] share a layout
}

/** Explicit padding that makes a stride-1 conv of dy (with the flipped filter) produce exactly the input's size. */
function transposedPadding(info: Conv2DInfo): ExplicitPadding {
  const effH = (info.filterHeight - 1) * info.dilationHeight;
  const effW = (info.filterWidth - 1) * info.dilationWidth;
  const top = effH - info.padInfo.top;
  const left = effW - info.padInfo.left;
  const bottom = info.inHeight - info.outHeight - top + effH;
  const right = info.inWidth - info.outWidth - left + effW;
  return [
    [0, 0],
    [top, bottom],
    [left, right],
    [0, 0],
  ];
}

function paddingIsNonNegative(pad: ExplicitPadding): boolean {
  return pad.every(([a, b]) => a >= 0 && b >= 0);
}

/** filter[fh, fw, a, b] -> flipped[fh, fw, b, a] with both spatial axes reversed. */
function flippedSwappedFilter(backend: WasmBackend, filter: TensorInfo): TensorInfo {
  const [fh, fw, a, b] = filter.shape;
  const out = allocate(backend, [fh, fw, b, a]);
  const src = view(backend, filter);
  const dst = view(backend, out);
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      const s = (i * fw + j) * a * b;
      const d = ((fh - 1 - i) * fw + (fw - 1 - j)) * a * b;
      for (let p = 0; p < a; p++) {
        for (let q = 0; q < b; q++) dst[d + q * a + p] = src[s + p * b + q];
      }
    }
  }
  return out;
}

function conv2DBackpropInput(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { dy, filter } = inputs;
  requireFloat32('Conv2DBackpropInput', dy, filter);
  const info = conv2dInfo(attrs.inputShape as number[], filter.shape, attrs, false);
  requireChannelsLast(info, 'Conv2DBackpropInput');
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (loops && winogradFits(info)) return winogradConv(backend, loops, dy, winogradFilter(view(backend, filter), true), undefined, false);
  const pad = transposedPadding(info);
  if (info.strideHeight !== 1 || info.strideWidth !== 1 || !paddingIsNonNegative(pad)) {
    return callStock('Conv2DBackpropInput', args);
  }
  const flipped = flippedSwappedFilter(backend, filter);
  const dx = runKernel('Conv2D', backend, { x: dy, filter: flipped }, {
    strides: [1, 1],
    pad,
    dataFormat: 'NHWC',
    dilations: [1, 1],
  } as unknown as NamedAttrMap);
  release(backend, flipped);
  return dx;
}

/**
 * FusedConv2D: block 1's 16 -> 16 convolution (with its bias, and ReLU or no activation) by Winograd (winograd.ts);
 * every other convolution by the stock XNNPACK kernel. CONV_BIAS_RELU, what the fused conv layers run, is this kernel
 * with activation 'relu'.
 */
function fusedConv2D(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x, filter, bias, preluActivationWeights } = inputs;
  const activation = attrs.activation ?? 'linear';
  const plain = preluActivationWeights === undefined && (activation === 'relu' || activation === 'linear');
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (!plain || !loops || x.dtype !== 'float32' || filter.dtype !== 'float32' || (bias && bias.dtype !== 'float32')) {
    return callStock('FusedConv2D', args);
  }
  const info = conv2dInfo(x.shape, filter.shape, attrs, false, (attrs.dilations as [number, number]) ?? 1);
  if (info.dataFormat !== 'channelsLast' || !winogradFits(info) || (bias && tf.util.sizeFromShape(bias.shape) !== info.outChannels)) {
    return callStock('FusedConv2D', args);
  }
  const u = winogradFilter(view(backend, filter), false);
  return winogradConv(backend, loops, x, u, bias ? view(backend, bias).slice() : undefined, activation === 'relu');
}

function depthwiseFilterGradLoops(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, outChannels } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dwl } = info;
  const m = outChannels / c;
  const { top, left } = info.padInfo;
  const dw = allocate(backend, [fh, fw, c, m]);
  const xs = view(backend, x);
  const dys = view(backend, dy);
  const out = view(backend, dw);
  out.fill(0);
  const acc = new Float64Array(c * m);
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      acc.fill(0);
      for (let b = 0; b < batchSize; b++) {
        for (let oy = 0; oy < outHeight; oy++) {
          const iy = oy * sh + i * dh - top;
          if (iy < 0 || iy >= inHeight) continue;
          for (let ox = 0; ox < outWidth; ox++) {
            const ix = ox * sw + j * dwl - left;
            if (ix < 0 || ix >= inWidth) continue;
            const xBase = ((b * inHeight + iy) * inWidth + ix) * c;
            const dyBase = ((b * outHeight + oy) * outWidth + ox) * outChannels;
            if (m === 1) {
              for (let k = 0; k < c; k++) acc[k] += xs[xBase + k] * dys[dyBase + k];
            } else {
              for (let k = 0; k < c; k++) {
                const xv = xs[xBase + k];
                for (let q = 0; q < m; q++) acc[k * m + q] += xv * dys[dyBase + k * m + q];
              }
            }
          }
        }
      }
      const base = (i * fw + j) * c * m;
      for (let k = 0; k < c * m; k++) out[base + k] = acc[k];
    }
  }
  return dw;
}

/**
 * Depthwise filter gradient, stride 1, multiplier 1: per channel c and tap, the dot product of x's
 * channel-c grid row (shifted by the tap) with dy's channel-c grid row. All channels of a tap go in one
 * batched matmul [c, 1, P] x [c, P, 1] (same window trick as the dense filter gradient).
 */
function depthwiseFilterGradStrideOne(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: c } = info;
  const { wp, positions } = strideOneGrid(info);
  const xT = inputOnGridChannelMajor(backend, x, info);
  const dyT = channelMajorGrid(backend, dy, gradPlacement(info), 0); // multiplier 1: dy has c channels too
  const dw = allocate(backend, [fh, fw, c, 1]);
  const b = reshaped(dyT, [c, positions, 1]);
  for (let i = 0; i < fh; i++) {
    for (let j = 0; j < fw; j++) {
      const shift = i * info.dilationHeight * wp + j * info.dilationWidth;
      const window = alias(backend, xT, shift, [c, 1, positions]);
      const tap = runKernel('BatchMatMul', backend, { a: window, b }, { transposeA: false, transposeB: false });
      releaseAlias(backend, window);
      view(backend, dw).set(view(backend, tap), (i * fw + j) * c);
      release(backend, tap);
    }
  }
  release(backend, xT, dyT);
  return dw;
}

/** Where each filter tap reads x on the stride-1 grid, relative to the output pixel's own grid position, in bytes. */
function tapByteShifts(info: Conv2DInfo): number[] {
  const { wp } = strideOneGrid(info);
  const shifts: number[] = [];
  for (let i = 0; i < info.filterHeight; i++) {
    for (let j = 0; j < info.filterWidth; j++) shifts.push((i * info.dilationHeight * wp + j * info.dilationWidth) * info.inChannels * 4);
  }
  return shifts;
}

/** Which SIMD loop a filter gradient's rows run, with its three loop-specific arguments (row-jobs.ts). */
type RowLoop = { loop: 0 | 1; a: number; b: number; c: number };

/**
 * A stride-1 filter gradient taken one output row at a time by a SIMD loop (row-jobs.ts, split across two threads
 * where the helper runs): x goes onto the padded grid position-major (row copies only), dy is read where it is, and
 * the loop's float32 sums move into float64 totals every 256 positions, so long sums keep float32's rounding small.
 */
function filterGradByRows(
  backend: WasmBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: Conv2DInfo,
  sums: number,
  table: number[],
  rowLoop: RowLoop,
  loops: SimdLoops,
): Float64Array {
  const { inChannels: ci, outChannels: co, outHeight, outWidth, batchSize } = info;
  const { hp, wp } = strideOneGrid(info);
  const grid = allocate(backend, [batchSize * hp * wp * ci]);
  // Each thread's partial sums and totals, then the loop's int32 table.
  const scratch = twoThreadSums(backend, sums, table.length);
  copyIntoGrid(view(backend, x), view(backend, grid), inputPlacement(info));
  const tableAt = scratch.extraAt;
  new Int32Array(view(backend, scratch.info).buffer, tableAt, table.length).set(table);
  const regions = (thread: 0 | 1) => {
    const { partialAt, totalAt } = scratch.regions(thread);
    return { accAt: partialAt, totalAt };
  };
  const job = {
    ...rowLoop,
    gridAt: byteOffset(backend, grid),
    dyAt: byteOffset(backend, dy),
    tableAt,
    ...regions(0),
    sums,
    r0: 0,
    r1: batchSize * outHeight,
    outHeight,
    outWidth,
    hp,
    gridRowBytes: wp * ci * 4,
    dyRowBytes: outWidth * co * 4,
  };
  const total = runFilterGradJob(loops, () => view(backend, scratch.info).buffer, job, regions(1));
  release(backend, grid, scratch.info);
  return total;
}

/**
 * Depthwise filter gradient, stride 1, multiplier 1, channels a multiple of 4: for each output row,
 * acc[tap, k] += xGrid[p + shift(tap), k] * dy[p, k] over the row's positions.
 */
function depthwiseFilterGradSimd(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo, loops: SimdLoops): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: c } = info;
  const taps = fh * fw;
  const total = filterGradByRows(backend, x, dy, info, taps * c, tapByteShifts(info), { loop: 1, a: c * 4, b: taps, c: 0 }, loops);
  const dw = allocate(backend, [fh, fw, c, 1]);
  view(backend, dw).set(total); // [tap][channel] is dW's layout
  return dw;
}

/**
 * Dense filter gradient, stride 1, outputs a multiple of 16, with the SIMD loop: for each output row and each
 * (tap, input channel) pair r, acc[r, o] += xGrid[p + shift(tap), c] * dy[p, o]. XNNPACK's matmuls took ~450 ms for
 * block 1's 16 -> 16 conv at batch 32, most of it packing dy on one thread; this loop reads both where they lie.
 */
function denseFilterGradSimd(backend: WasmBackend, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo, loops: SimdLoops): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: ci, outChannels: co } = info;
  const offsets = tapByteShifts(info).flatMap((shift) => Array.from({ length: ci }, (_, c) => shift + c * 4));
  if (offsets.length % 2 === 1) offsets.push(0); // the loop takes rows in pairs: an odd one out gets a row of sums nobody reads
  const rowLoop: RowLoop = { loop: 0, a: ci * 4, b: co * 4, c: offsets.length };
  const total = filterGradByRows(backend, x, dy, info, offsets.length * co, offsets, rowLoop, loops);
  const dw = allocate(backend, [fh, fw, ci, co]);
  view(backend, dw).set(total.subarray(0, fh * fw * ci * co)); // [tap][input][output] is dW's layout
  return dw;
}

function depthwiseConv2dNativeBackpropFilter({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { x, dy } = inputs;
  requireFloat32('DepthwiseConv2dNativeBackpropFilter', x, dy);
  const dilations = (attrs.dilations as number | [number, number] | undefined) ?? 1;
  const info = conv2dInfo(x.shape, attrs.filterShape as number[], attrs, true, dilations);
  const multiplier = info.outChannels / info.inChannels;
  if (info.strideHeight === 1 && info.strideWidth === 1 && multiplier === 1) {
    const loops = simdLoops(backend.wasm.sharedMemory);
    if (loops && info.inChannels % 4 === 0) return depthwiseFilterGradSimd(backend, x, dy, info, loops);
    return depthwiseFilterGradStrideOne(backend, x, dy, info);
  }
  return depthwiseFilterGradLoops(backend, x, dy, info);
}

function depthwiseInputGradLoops(backend: WasmBackend, dy: TensorInfo, filter: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { batchSize, inHeight, inWidth, inChannels: c, outChannels } = info;
  const m = outChannels / c;
  const dx = allocate(backend, [batchSize, inHeight, inWidth, c]);
  const dys = view(backend, dy);
  const ws = view(backend, filter);
  const out = view(backend, dx);
  out.fill(0);
  forEachWindowTap(info, (dyPixel, xPixel, tap) => {
    const dyBase = dyPixel * outChannels;
    const xBase = xPixel * c;
    const wBase = tap * outChannels;
    for (let k = 0; k < c; k++) {
      let sum = 0;
      for (let q = 0; q < m; q++) sum += dys[dyBase + k * m + q] * ws[wBase + k * m + q];
      out[xBase + k] += sum;
    }
  });
  return dx;
}

function depthwiseConv2dNativeBackpropInput({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs;
  requireFloat32('DepthwiseConv2dNativeBackpropInput', dy, filter);
  const dilations = (attrs.dilations as number | [number, number] | undefined) ?? 1;
  const info = conv2dInfo(attrs.inputShape as number[], filter.shape, attrs, true, dilations);
  const pad = transposedPadding(info);
  const multiplier = info.outChannels / info.inChannels;
  if (info.strideHeight === 1 && info.strideWidth === 1 && multiplier === 1 && paddingIsNonNegative(pad)) {
    // Channel multiplier 1: the flipped filter keeps its [fh, fw, c, 1] layout.
    const flipped = flippedSwappedFilter(backend, reshaped(filter, [filter.shape[0], filter.shape[1], 1, info.inChannels]));
    const dx = runKernel(
      'DepthwiseConv2dNative',
      backend,
      { x: dy, filter: reshaped(flipped, [filter.shape[0], filter.shape[1], info.inChannels, 1]) },
      {
        strides: [1, 1],
        pad,
        dilations: [info.dilationHeight, info.dilationWidth],
      } as unknown as NamedAttrMap,
    );
    release(backend, flipped);
    return dx;
  }
  return depthwiseInputGradLoops(backend, dy, filter, info);
}

/** Whether a pooling has 2x2 windows with stride 2 and no top or left padding: the 2x2 SIMD loops' case. */
const halvesUnpadded = (info: Conv2DInfo): boolean =>
  [info.effectiveFilterHeight, info.effectiveFilterWidth, info.strideHeight, info.strideWidth].every((d) => d === 2) &&
  info.padInfo.top === 0 &&
  info.padInfo.left === 0;

/** A max pooling's geometry over `input` from a pool gradient kernel's attributes. */
function poolInfo(input: TensorInfo, attrs: NamedAttrMap): Conv2DInfo {
  return backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    attrs.filterSize as number | [number, number],
    attrs.strides as number | [number, number],
    1,
    attrs.pad as PadAttr,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
}

/**
 * Max-pool gradient. The stock wasm MaxPoolGrad returns wrong values (it drops or misplaces gradients,
 * e.g. 16-95% max relative error vs cpu on 4x4..11x10 inputs), so this replaces it. Each window's
 * gradient goes to its first maximum in row-major order, exactly as the cpu backend does.
 */
/**
 * Exported for the web app (src/app/browser.ts), which registers it on the browser's stock wasm backend: the
 * stock MaxPoolGrad gave Grad-CAM maps up to 0.10 away from the cpu backend's on the seed model (9x9 -> 4x4 pool).
 */
export function maxPoolGrad({ inputs, backend, attrs }: KernelArgs): TensorInfo {
  const { dy, input } = inputs;
  requireFloat32('MaxPoolGrad', dy, input);
  const info = poolInfo(input, attrs);
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth } = info;
  const { strideHeight: sh, strideWidth: sw, effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info;
  const { top, left } = info.padInfo;
  const dx = allocate(backend, input.shape);
  const xs = view(backend, input);
  const dys = view(backend, dy);
  const out = view(backend, dx);
  if (halvesUnpadded(info)) {
    const loops = simdLoops(backend.wasm.sharedMemory);
    if (loops && c % 4 === 0) {
      zeroUncovered(out, info);
      const { call, rows } = poolGradRowCall(
        info,
        'maxpool2x2',
        [input, dy, dx].map((t) => byteOffset(backend, t)),
      );
      runRows(backend, loops, call, rows, batchSize * inHeight * inWidth * c);
      return dx;
    }
    maxPoolGrad2x2(xs, dys, out, batchSize, inHeight, inWidth, c, outHeight, outWidth);
    return dx;
  }
  out.fill(0);
  const best = new Float32Array(c);
  const where = new Int32Array(c);
  for (let b = 0; b < batchSize; b++) {
    for (let oy = 0; oy < outHeight; oy++) {
      const y0 = Math.max(0, oy * sh - top);
      const y1 = Math.min(inHeight, oy * sh - top + fh);
      for (let ox = 0; ox < outWidth; ox++) {
        const x0 = Math.max(0, ox * sw - left);
        const x1 = Math.min(inWidth, ox * sw - left + fw);
        best.fill(Number.NEGATIVE_INFINITY);
        where.fill(-1);
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) {
            const base = ((b * inHeight + y) * inWidth + x) * c;
            for (let k = 0; k < c; k++) {
              const v = xs[base + k];
              if (v > best[k]) {
                best[k] = v;
                where[k] = base + k;
              }
            }
          }
        }
        const dyBase = ((b * outHeight + oy) * outWidth + ox) * c;
        for (let k = 0; k < c; k++) if (where[k] >= 0) out[where[k]] += dys[dyBase + k];
      }
    }
  }
  return dx;
}

/**
 * Zeroes what no window of a 2x2 / 2 pooling takes, where the loops write nothing: an odd height's last row of each
 * image, an odd width's last pixel of each row. Only those: zeroing all of block 2's 23 MB first cost as much as the
 * loop itself.
 */
function zeroUncovered(out: Float32Array, info: Conv2DInfo): void {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth } = info;
  const rowValues = inWidth * c;
  if (inHeight !== 2 * outHeight) {
    for (let b = 0; b < batchSize; b++) out.fill(0, ((b + 1) * inHeight - 1) * rowValues, (b + 1) * inHeight * rowValues);
  }
  if (inWidth !== 2 * outWidth) {
    for (let row = 0; row < batchSize * inHeight; row++) out.fill(0, (row + 1) * rowValues - c, (row + 1) * rowValues);
  }
}

/**
 * The row call of the 2x2 SIMD max-pool gradient loops (maxpool2x2, maxpool2x2relu with its sums' argument) over
 * tensors = [x, dy, dx] (byte offsets): rows of windows two input rows apart, across images too where the height is
 * even; for an odd height, whose last input row no window takes, one image a call.
 */
function poolGradRowCall(info: Conv2DInfo, loop: 'maxpool2x2' | 'maxpool2x2relu', tensors: number[]): { call: RowCall; rows: number } {
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth } = info;
  const [rowBytes, dyRowBytes] = [inWidth * c * 4, outWidth * c * 4];
  const relu = loop === 'maxpool2x2relu';
  const even = inHeight === 2 * outHeight;
  // (xRow, dyRow, outRow, [acc,] rows, outW, cBytes, rowBytes)
  const args = [...tensors, ...(relu ? [0] : []), even ? 0 : outHeight, outWidth, c * 4, rowBytes];
  const perRow = even ? [2 * rowBytes, dyRowBytes, 2 * rowBytes] : [inHeight * rowBytes, outHeight * dyRowBytes, inHeight * rowBytes];
  const call: RowCall = {
    loop,
    args,
    strides: [...perRow, ...new Array<number>(args.length - perRow.length).fill(0)],
    countArg: even ? args.length - 4 : -1,
    partialArgs: relu ? 0b1000 : 0,
  };
  return { call, rows: even ? batchSize * outHeight : batchSize };
}

/**
 * MAX_POOL_GRAD_RELU (../fused/pool-layers.ts): MaxPoolGrad times step(input), the ReLU before's mask, with its
 * per-channel sums (that layer's bias gradient), for a 2x2 / 2 pooling in one pass (maxpool2x2relu) instead of
 * MaxPoolGrad and a mask pass over the 46 MB of block 1's output; other poolings run the two kernels.
 */
function maxPoolGradRelu(args: KernelArgs): TensorInfo[] {
  const { inputs, backend, attrs } = args;
  const { dy, input } = inputs;
  requireFloat32('MaxPoolGradRelu', dy, input);
  const info = poolInfo(input, attrs);
  const { batchSize, inHeight, inWidth, inChannels: c } = info;
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (!loops || !halvesUnpadded(info) || c % 4 !== 0) {
    return maskedByRelu(backend, maxPoolGrad(args) as TensorInfo, input);
  }
  const dx = allocate(backend, input.shape);
  zeroUncovered(view(backend, dx), info);
  const { call, rows } = poolGradRowCall(
    info,
    'maxpool2x2relu',
    [input, dy, dx].map((t) => byteOffset(backend, t)),
  );
  const totals = runRows(backend, loops, call, rows, batchSize * inHeight * inWidth * c, c);
  const sums = allocate(backend, [c]);
  view(backend, sums).set(totals);
  return [dx, sums];
}

/** The common 2x2 / stride 2 / unpadded case: windows do not overlap, so every input is written once. */
function maxPoolGrad2x2(
  xs: Float32Array,
  dys: Float32Array,
  out: Float32Array,
  batchSize: number,
  inHeight: number,
  inWidth: number,
  c: number,
  outHeight: number,
  outWidth: number,
): void {
  if (inHeight !== 2 * outHeight || inWidth !== 2 * outWidth) out.fill(0); // odd edge rows/cols get no gradient
  const row = inWidth * c;
  let g = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let oy = 0; oy < outHeight; oy++) {
      const r0 = (b * inHeight + 2 * oy) * row;
      for (let ox = 0; ox < outWidth; ox++) {
        const p0 = r0 + 2 * ox * c;
        const p1 = p0 + c;
        const p2 = p0 + row;
        const p3 = p2 + c;
        for (let k = 0; k < c; k++, g++) {
          const v0 = xs[p0 + k],
            v1 = xs[p1 + k],
            v2 = xs[p2 + k],
            v3 = xs[p3 + k];
          out[p0 + k] = 0;
          out[p1 + k] = 0;
          out[p2 + k] = 0;
          out[p3 + k] = 0;
          // First maximum in row-major order wins ties, as on the cpu backend.
          let at = p0 + k;
          let best = v0;
          if (v1 > best) {
            best = v1;
            at = p1 + k;
          }
          if (v2 > best) {
            best = v2;
            at = p2 + k;
          }
          if (v3 > best) {
            at = p3 + k;
          }
          out[at] = dys[g];
        }
      }
    }
  }
}

type Impl = (args: KernelArgs) => TensorInfo | TensorInfo[];

const TRAINING_KERNELS: Array<[string, Impl]> = [
  ['Conv2DBackpropFilter', conv2DBackpropFilter],
  ['Conv2DBackpropInput', conv2DBackpropInput],
  ['FusedConv2D', fusedConv2D],
  ['DepthwiseConv2dNativeBackpropFilter', depthwiseConv2dNativeBackpropFilter],
  ['DepthwiseConv2dNativeBackpropInput', depthwiseConv2dNativeBackpropInput],
  ['MaxPoolGrad', maxPoolGrad],
  [MAX_POOL_GRAD_RELU, maxPoolGradRelu],
  ...FAST_OP_KERNELS,
  ...FUSED_TRAINING_KERNELS,
];

export const WASM_TRAINING_KERNEL_NAMES = TRAINING_KERNELS.map(([name]) => name);

/**
 * Baseline for profiling only (PNEUMO_WASM_KERNELS=minimal): just the three kernels stock wasm lacks,
 * as plain loops, with every stock kernel left in place - what "wasm can train at all" costs before
 * any of the fast paths above.
 */
const MINIMAL_KERNELS: Array<[string, Impl]> = [
  [
    'Conv2DBackpropFilter',
    ({ inputs, backend, attrs }) =>
      conv2DBackpropFilterLoops(backend, inputs.x, inputs.dy, conv2dInfo(inputs.x.shape, attrs.filterShape as number[], attrs, false)),
  ],
  [
    'DepthwiseConv2dNativeBackpropFilter',
    ({ inputs, backend, attrs }) =>
      depthwiseFilterGradLoops(
        backend,
        inputs.x,
        inputs.dy,
        conv2dInfo(inputs.x.shape, attrs.filterShape as number[], attrs, true, (attrs.dilations as [number, number]) ?? 1),
      ),
  ],
  [
    'DepthwiseConv2dNativeBackpropInput',
    ({ inputs, backend, attrs }) =>
      depthwiseInputGradLoops(
        backend,
        inputs.dy,
        inputs.filter,
        conv2dInfo(attrs.inputShape as number[], inputs.filter.shape, attrs, true, (attrs.dilations as [number, number]) ?? 1),
      ),
  ],
];

let registered: 'full' | 'minimal' | undefined;

/**
 * Registers (or replaces) the training kernels for 'wasm'. Idempotent. Must run before the first
 * training step; it may run before or after tf.setBackend('wasm') since these kernels need no setup.
 * PNEUMO_WASM_KERNELS=minimal registers only the profiling baseline (see MINIMAL_KERNELS).
 */
export function registerWasmTrainingKernels(): string[] {
  const mode = process.env.PNEUMO_WASM_KERNELS === 'minimal' ? 'minimal' : 'full';
  const set = mode === 'minimal' ? MINIMAL_KERNELS : TRAINING_KERNELS;
  if (registered) return set.map(([name]) => name);
  for (const [name, impl] of set) {
    const existing = tf.getKernel(name, 'wasm');
    if (existing) {
      rememberStock(name, existing);
      tf.unregisterKernel(name, 'wasm');
    }
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: impl as unknown as KernelConfig['kernelFunc'] });
  }
  if (mode === 'full') {
    // They take over only where the active backend registered their kernels (above, and on native).
    registerConvBiasRelu('wasm'); // the stock XNNPACK FusedConv2D with its ReLU
    installFusedBatchNorm();
    installFusedReluGradient();
    installFusedConvLayers();
    installBackendFusedAdam();
  }
  registered = mode;
  return set.map(([name]) => name);
}
