/**
 * Finding and loading the oneDNN addon (accel/onednn, `npm run build:native`), and its thread setting.
 */
import * as fs from 'fs';
import * as path from 'path';
import { addonFile } from '../addons';
import type { Activation, BinaryOp, Broadcast, SumMode, UnaryOp } from './ops';

const ADDON_RELATIVE = path.join('accel', 'onednn', 'build', 'Release', 'pneumo_native.node');

export interface ConvAlgorithmChoice {
  direction: 'forward' | 'backwardData' | 'backwardWeights';
  /** n, h, w, c, oh, ow, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr */
  geometry: number[];
  /** oneDNN's direct convolution, oneDNN's Winograd F(4x4, 3x3), or ours, F(2x2, 3x3) or F(4x4, 3x3)
   * (accel/onednn/src/winograd.cc). */
  algorithm: 'direct' | 'winograd' | 'winograd2x2' | 'winograd4x4';
  /** Each timed algorithm's time; -1 where it does not exist for the convolution. */
  winogradMs: number;
  winograd2x2Ms: number;
  winograd4x4Ms: number;
  directMs: number;
}

/** The addon's functions (accel/onednn/src/*.cc); all synchronous, writing into the last array given. */
export interface NativeAddon {
  setThreads(n: number): number;
  getThreads(): number;
  dnnlVersion(): string;
  /** Float lanes of the build's own vector loops: 16 (AVX-512), 8 (AVX2) or 4 (SSE), per its -march. */
  vectorLanes(): number;
  convForward(x: Float32Array, w: Float32Array, bias: Float32Array | null, y: Float32Array, geom: Int32Array, act: Activation): void;
  convBackwardData(dy: Float32Array, w: Float32Array, dx: Float32Array, geom: Int32Array): void;
  convBackwardWeights(x: Float32Array, dy: Float32Array, dw: Float32Array, geom: Int32Array): void;
  /** Where a Winograd fits: 'auto' times the algorithms once per direction and geometry (the default); 'winograd'
   * takes oneDNN's, else our F(4x4); 'winograd2x2' and 'winograd4x4' ours (PNEUMO_NATIVE_WINOGRAD=0 / 1 / 2x2 / 4x4
   * start as 'direct' / 'winograd' / 'winograd2x2' / 'winograd4x4'). Switching forgets the choices. */
  setConvAlgorithm(mode: 'auto' | 'direct' | 'winograd' | 'winograd2x2' | 'winograd4x4'): void;
  /** What 'auto' chose so far, with the times it compared. */
  convAlgorithmChoices(): ConvAlgorithmChoice[];
  /** Takes choices as convAlgorithmChoices lists them (from an earlier process: conv-choices.ts) as if timed here. */
  setConvAlgorithmChoices(choices: ConvAlgorithmChoice[]): void;
  matMul(a: Float32Array, b: Float32Array, c: Float32Array, bias: Float32Array | null, p: Int32Array, act: Activation): void;
  maxPool(x: Float32Array, y: Float32Array, geom: Int32Array): void;
  /** y: the forward output, which holds each window's maximum. */
  maxPoolGrad(dy: Float32Array, x: Float32Array, y: Float32Array, dx: Float32Array, geom: Int32Array): void;
  maxPoolGradRelu(dy: Float32Array, x: Float32Array, y: Float32Array, dx: Float32Array, sums: Float32Array, geom: Int32Array): void;
  /** y = a (op) b over `blocks` blocks of `inner` elements, each operand broadcast as its mode says. */
  binary(
    op: BinaryOp,
    a: Float32Array,
    modeA: Broadcast,
    b: Float32Array,
    modeB: Broadcast,
    y: Float32Array,
    blocks: number,
    inner: number,
  ): void;
  /** y = op(x); alpha is Step's value for x <= 0. */
  unary(op: UnaryOp, x: Float32Array, y: Float32Array, alpha: number): void;
  /** LeadingRows: y[j] = scale * sum_r x[r, j] over `outer` rows; Trailing: y[o] = scale * sum_j x[o, j]. */
  sum(x: Float32Array, y: Float32Array, mode: SumMode, outer: number, inner: number, scale: number): void;
  tile(x: Float32Array, y: Float32Array, inShape: Int32Array, outShape: Int32Array): void;
  /** y = dy * step(x): ReLU's gradient in one pass. */
  reluGrad(dy: Float32Array, x: Float32Array, y: Float32Array): void;
  /** masked = dy * step(y) and sums[c] = sum of masked over channel c (channels last), in one pass. */
  reluGradChannelSums(dy: Float32Array, y: Float32Array, masked: Float32Array, sums: Float32Array): void;
  clip(x: Float32Array, y: Float32Array, lo: number, hi: number): void;
  warpBilinearNearest(image: Float32Array, transforms: Float32Array, out: Float32Array, params: Int32Array): void;
  reluFilterGradOneChannel(
    x: Float32Array,
    dy: Float32Array,
    y: Float32Array,
    dw: Float32Array,
    sums: Float32Array,
    geom: Int32Array,
  ): void;
  /**
   * The depthwise 3x3 filter's gradient (stride 1, 'same' padding) into dw [3, 3, c, 1]; params [n, h, w, c]. False
   * (nothing written) where this build's vectors do not divide c. Absent from addons built before it.
   */
  depthwiseFilterGrad3x3?(x: Float32Array, dy: Float32Array, dw: Float32Array, params: Int32Array): boolean;
  /**
   * y = relu(bias + pointwise(depthwise(x))), the depthwise 3x3 with stride 1 and 'same' padding, in one pass; params
   * [n, h, w, ci, co]. False (nothing written) where this build's vectors do not divide ci, or twice their width co.
   */
  separableConvBiasRelu(
    x: Float32Array,
    depthwise: Float32Array,
    pointwise: Float32Array,
    bias: Float32Array,
    y: Float32Array,
    params: Int32Array,
  ): boolean;
  /**
   * sums[c] = sum of dy over channel c, sums[C + c] = sum of dy * (x - mean[c]); channels last. With codes, dy is
   * the gradient of the 2x2 / 2 max pooling of x's batch-norm (BATCH_NORM_MAX_POOL_TRAIN's codes and poolGeom).
   */
  batchNormGradSums(
    dy: Float32Array,
    x: Float32Array,
    mean: Float32Array,
    sums: Float32Array,
    codes?: Int32Array,
    poolGeom?: Int32Array,
  ): void;
  /** moments = mean | biased variance per channel of channels-last x (2C values), in one pass. */
  batchNormMoments(x: Float32Array, moments: Float32Array): void;
  /** Each of `images` equal parts of x to zero mean and unit variance (src/model/normalization.ts), into y. */
  standardizeImages(x: Float32Array, y: Float32Array, images: number): void;
  /**
   * dx = a[c] * dy + b[c] * (x - mean[c]) + k[c], with coef = a | b | k (3C values); channels last. reluSums: also
   * multiply dx by step(x) and take its per-channel sums (BATCH_NORM_TRAIN_GRAD_RELU). codes: as batchNormGradSums.
   */
  batchNormTrainGrad(
    dy: Float32Array,
    x: Float32Array,
    mean: Float32Array,
    coef: Float32Array,
    dx: Float32Array,
    reluSums?: Float32Array,
    codes?: Int32Array,
    poolGeom?: Int32Array,
  ): void;
  /** One Adam step; p = [beta1, 1-beta1, beta2, 1-beta2, 1-beta1^t, 1-beta2^t, epsilon, -learningRate]. */
  adam(
    w: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    p: Float64Array,
    wOut: Float32Array,
    mOut: Float32Array,
    vOut: Float32Array,
  ): void;
  /**
   * y = maxPool(conv(x) + bias, activation): convGeom as convForward's, poolGeom the pooling's over the convolution's
   * output (accel/onednn/src/conv.cc).
   */
  convForwardMaxPool(
    x: Float32Array,
    filter: Float32Array,
    bias: Float32Array | null,
    y: Float32Array,
    convGeom: Int32Array,
    poolGeom: Int32Array,
    activation: Activation,
    /** For training (a ReLU and a 2x2 / 2 pooling): two 16-bit codes an element, per pooled value and channel. */
    codes?: Int32Array,
  ): void;
  /** The convolution's input gradient from the pooling's dy and codes (the fused training pair; conv.cc). */
  convBackwardDataPooled(
    dy: Float32Array,
    codes: Int32Array,
    filter: Float32Array,
    dx: Float32Array,
    convGeom: Int32Array,
    poolGeom: Int32Array,
  ): void;
  /** The convolution's filter gradient from its input and the pooling's dy and codes. */
  convBackwardWeightsPooled(
    x: Float32Array,
    dy: Float32Array,
    codes: Int32Array,
    dw: Float32Array,
    convGeom: Int32Array,
    poolGeom: Int32Array,
  ): void;
  /** The ReLU's bias gradient, MaxPoolGradRelu's per-channel sums, from the pooling's dy and codes (pool.cc). */
  pooledReluGradSums(dy: Float32Array, codes: Int32Array, sums: Float32Array, poolGeom: Int32Array): void;
  /** y = maxPool(batchNorm(x)) as batchNorm and maxPool compute them, in one pass (accel/onednn/src/pool.cc). */
  batchNormMaxPool(
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    scale: Float32Array,
    offset: Float32Array,
    eps: number,
    y: Float32Array,
    poolGeom: Int32Array,
    /** For training (a 2x2 / 2 pooling): the codes the batch-norm gradient reads (accel/onednn/src/pool.h). */
    codes?: Int32Array,
  ): void;
  /** Channels-last batch-norm; the four vectors hold one value per channel. */
  batchNorm(
    x: Float32Array,
    mean: Float32Array,
    variance: Float32Array,
    scale: Float32Array,
    offset: Float32Array,
    eps: number,
    y: Float32Array,
  ): void;
}

/** PNEUMO_NATIVE_ADDON, else accel/onednn/build/Release/pneumo_native.node in this checkout. */
function findAddonPath(): string | undefined {
  return process.env.PNEUMO_NATIVE_ADDON || addonFile('onednn', 'pneumo_native.node');
}

let addon: NativeAddon | undefined;

/** The loaded addon's file, size and modification time: a rebuilt addon is another build. */
export function nativeAddonBuild(): string | undefined {
  const file = findAddonPath();
  if (!addon || !file || !fs.existsSync(file)) return undefined;
  const { size, mtimeMs } = fs.statSync(file);
  return `${path.resolve(file)} (${size} bytes, modified ${new Date(mtimeMs).toISOString()})`;
}

/** Loads the addon, or says in one sentence why it cannot. */
export function loadNativeAddon(): { addon: NativeAddon } | { why: string } {
  if (addon) return { addon };
  const file = findAddonPath();
  if (!file || !fs.existsSync(file)) {
    return {
      why: `native addon not built (${file ?? ADDON_RELATIVE} missing); install libdnnl-dev and run \`npm run build:native\``,
    };
  }
  try {
    // OpenMP threads that spin between kernels steal the core the JS thread (or another
    // process) needs; sleeping at once measured faster on these 2-core machines. libgomp reads
    // this when the addon loads it, so it must be set first; an explicit setting wins.
    process.env.OMP_WAIT_POLICY ??= 'PASSIVE';
    addon = require(file) as NativeAddon;
    return { addon };
  } catch (err) {
    return { why: `native addon at ${file} failed to load: ${(err as Error).message}` };
  }
}

/** Threads for oneDNN/OpenMP: PNEUMO_NATIVE_THREADS, else OpenMP's default (all cores). */
export function applyThreadSetting(a: NativeAddon): number {
  const raw = process.env.PNEUMO_NATIVE_THREADS;
  if (raw === undefined || raw === '') return a.getThreads();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`PNEUMO_NATIVE_THREADS must be a positive integer; got '${raw}'. Unset it to use all cores.`);
  }
  return a.setThreads(n);
}
