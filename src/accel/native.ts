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
 * ReLU and batch-norm gradients and Adam's update are fused too (registerFusedGradients,
 * registerFusedAdam), only while this backend is active.
 *
 * Nothing here is required: when the addon is not built, tryRegisterNative says why and the
 * backend chain moves on.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';

export const NATIVE_BACKEND = 'native';
/** Above wasm (2) and cpu (1): once registered it is the fastest backend in this process. */
const NATIVE_PRIORITY = 3;
const ADDON_RELATIVE = path.join('accel', 'onednn', 'build', 'Release', 'pneumo_native.node');

/** The addon's functions (accel/onednn/src/*.cc); all synchronous, writing into the last array given. */
export interface NativeAddon {
  setThreads(n: number): number;
  getThreads(): number;
  dnnlVersion(): string;
  convForward(x: Float32Array, w: Float32Array, bias: Float32Array | null, y: Float32Array, geom: Int32Array, act: number): void;
  convBackwardData(dy: Float32Array, w: Float32Array, dx: Float32Array, geom: Int32Array): void;
  convBackwardWeights(x: Float32Array, dy: Float32Array, dw: Float32Array, geom: Int32Array): void;
  matMul(a: Float32Array, b: Float32Array, c: Float32Array, bias: Float32Array | null, p: Int32Array, act: number): void;
  maxPool(x: Float32Array, y: Float32Array, geom: Int32Array): void;
  maxPoolGrad(dy: Float32Array, x: Float32Array, dx: Float32Array, geom: Int32Array): void;
  /** op: 0 add, 1 sub, 2 mul, 3 div, 4 squared difference; modes: see BroadcastMode. */
  binary(op: number, a: Float32Array, modeA: number, b: Float32Array, modeB: number, y: Float32Array, blocks: number, inner: number): void;
  /** op: 0 relu, 1 step(alpha), 2 sqrt, 3 square, 4 rsqrt, 5 neg, 6 floor. */
  unary(op: number, x: Float32Array, y: Float32Array, alpha: number): void;
  /** mode 0: y[j] = scale * sum_r x[r, j] over `outer` rows; mode 1: y[o] = scale * sum_j x[o, j]. */
  sum(x: Float32Array, y: Float32Array, mode: 0 | 1, outer: number, inner: number, scale: number): void;
  tile(x: Float32Array, y: Float32Array, inShape: Int32Array, outShape: Int32Array): void;
  /** y = dy * step(x): ReLU's gradient in one pass. */
  reluGrad(dy: Float32Array, x: Float32Array, y: Float32Array): void;
  /** sums[c] = sum of dy over channel c, sums[C + c] = sum of dy * (x - mean[c]); channels last. */
  batchNormGradSums(dy: Float32Array, x: Float32Array, mean: Float32Array, sums: Float32Array): void;
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

export type NativeRegistration = { ok: true; threads: number } | { ok: false; why: string };

/** Walks up from this file to the checkout root (the folder holding accel/onednn/binding.gyp). */
function findAddonPath(): string | undefined {
  const override = process.env.PNEUMO_NATIVE_ADDON;
  if (override) return override;
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'accel', 'onednn', 'binding.gyp'))) return path.join(dir, ADDON_RELATIVE);
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

let addon: NativeAddon | undefined;
let registration: NativeRegistration | undefined;

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
function applyThreadSetting(a: NativeAddon): number {
  const raw = process.env.PNEUMO_NATIVE_THREADS;
  if (raw === undefined || raw === '') return a.getThreads();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`PNEUMO_NATIVE_THREADS must be a positive integer; got '${raw}'. Unset it to use all cores.`);
  }
  return a.setThreads(n);
}

/** Registers the `native` backend and its kernels (idempotent). Never throws. */
export function tryRegisterNative(): NativeRegistration {
  if (registration) return registration;
  const loaded = loadNativeAddon();
  if ('why' in loaded) return { ok: false, why: loaded.why };
  try {
    const threads = applyThreadSetting(loaded.addon);
    registerKernels(loaded.addon);
    registerFusedGradients(loaded.addon);
    registerFusedAdam();
    tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(), NATIVE_PRIORITY);
    registration = { ok: true, threads };
  } catch (err) {
    registration = { ok: false, why: `native backend failed to register: ${(err as Error).message}` };
  }
  return registration;
}

type DataId = Parameters<MathBackendCPU['readSync']>[0];
type BackendValues = Parameters<MathBackendCPU['write']>[0];

/**
 * The CPU backend under its own name, so `tf.getBackend()` reports 'native', plus the
 * bookkeeping that lets the addon's output buffers be recycled (see uninitialised()).
 */
export class NativeBackend extends MathBackendCPU {
  constructor() {
    super();
    // The CPU backend's first write advises installing tfjs-node; this backend is the answer to that.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  override write(values: BackendValues, shape: number[], dtype: tf.DataType): DataId {
    const id = super.write(values, shape, dtype);
    trackView(values, 1);
    return id;
  }

  override move(dataId: DataId, values: BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    const previous = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    super.move(dataId, values, shape, dtype, refCount);
    trackView(values, 1);
    trackView(previous, -1);
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const values = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    const gone = super.disposeData(dataId, force);
    if (gone && values !== undefined && !this.data.has(dataId)) trackView(values, -1);
    return gone;
  }

  override readSync(dataId: DataId): BackendValues {
    const v = super.readSync(dataId);
    return isPooled(v) ? v.slice() : v;
  }

  override dispose(): void {
    super.dispose();
    releaseNativePool();
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels

type Backend = MathBackendCPU;
type Info = tf.TensorInfo;
type Attrs = Record<string, unknown>;
type KernelArgs = { inputs: Record<string, Info>; backend: Backend; attrs?: Attrs };
type NativeKernel = (args: KernelArgs, cpu: tf.KernelFunc) => Info | Info[] | undefined;

/** A float32 tensor's storage; a few CPU kernels (casts) leave other typed arrays, copied here. */
function values(backend: Backend, t: Info): Float32Array {
  const v = backend.data.get(t.dataId).values;
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}

function allFloat32(...ts: Array<Info | undefined>): boolean {
  return ts.every((t) => t === undefined || t.dtype === 'float32');
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Output buffers for the addon, recycled. A training step at 150x150 allocates gigabytes of
 * short-lived activations; as fresh ArrayBuffers they cost zero fills, page faults and a V8
 * mark-compact every few dozen ops. Buffers the addon allocated are counted per live dataId
 * (views made by CPU kernels count too) and go back to the pool when the last one is
 * disposed. Reads hand out copies, so no array a caller holds is ever reused.
 */
const POOL_MIN_BYTES = 64 * 1024;
// A 150x150 batch-32 training step frees ~1.5 GB of buffers between reuses; at 768 MB the rest
// went to the GC and came back as fresh, page-faulted allocations (and mark-compacts), which cost
// ~25% of a step. Peak RSS barely moves with the cap: unpooled buffers wait for the GC instead.
const poolCapBytes = Number(process.env.PNEUMO_NATIVE_POOL_MB ?? 2048) * 1024 * 1024;
const pool = new Map<number, Float32Array[]>();
let pooledBytes = 0;
const liveViews = new WeakMap<ArrayBufferLike, number>();

function uninitialised(n: number): Float32Array {
  if (n * 4 < POOL_MIN_BYTES) return new Float32Array(n);
  const reused = pool.get(n)?.pop();
  if (reused) {
    pooledBytes -= n * 4;
    return reused;
  }
  // Buffer.allocUnsafe: a dedicated, uninitialised ArrayBuffer (the addon overwrites it all).
  const buf = Buffer.allocUnsafe(n * 4);
  liveViews.set(buf.buffer, 0);
  return new Float32Array(buf.buffer, buf.byteOffset, n);
}

function isPooled(values: unknown): values is Float32Array {
  return values instanceof Float32Array && liveViews.has(values.buffer);
}

function trackView(values: unknown, delta: 1 | -1): void {
  if (!isPooled(values)) return;
  const count = (liveViews.get(values.buffer) ?? 0) + delta;
  liveViews.set(values.buffer, count);
  if (count > 0) return;
  const bytes = values.buffer.byteLength;
  if (pooledBytes + bytes > poolCapBytes) return; // let the GC have it
  const whole = new Float32Array(values.buffer);
  const list = pool.get(whole.length) ?? [];
  list.push(whole);
  pool.set(whole.length, list);
  pooledBytes += bytes;
}

/** Drops every pooled buffer (memory goes back at the next GC). */
export function releaseNativePool(): void {
  pool.clear();
  pooledBytes = 0;
}

function output(backend: Backend, shape: number[], data: Float32Array): Info {
  return backend.makeTensorInfo(shape, 'float32', data);
}

/** ConvGeom in accel/onednn/src/common.h: N H W C OH OW OC KH KW SH SW DH DW PT PL PB PR depthMult. */
function convGeom(info: tf.backend_util.Conv2DInfo, depthwise: boolean): Int32Array {
  const p = info.padInfo;
  // oneDNN wants out = (in + padL + padR - effectiveFilter) / stride + 1 exactly; tfjs's rounding
  // modes can leave padInfo's bottom/right inconsistent with that, so derive them from the output.
  const bottom = (info.outHeight - 1) * info.strideHeight + info.effectiveFilterHeight - info.inHeight - p.top;
  const right = (info.outWidth - 1) * info.strideWidth + info.effectiveFilterWidth - info.inWidth - p.left;
  return Int32Array.from([
    info.batchSize,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.outHeight,
    info.outWidth,
    info.outChannels,
    info.filterHeight,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.dilationHeight,
    info.dilationWidth,
    p.top,
    p.left,
    bottom,
    right,
    depthwise ? info.outChannels / info.inChannels : 0,
  ]);
}

/** Pool geometry: N H W C OH OW KH KW SH SW DH DW PT PL. */
function poolGeom(info: tf.backend_util.Conv2DInfo): Int32Array {
  return Int32Array.from([
    info.batchSize,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.outHeight,
    info.outWidth,
    info.filterHeight,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.dilationHeight,
    info.dilationWidth,
    info.padInfo.top,
    info.padInfo.left,
  ]);
}

function isNHWC(attrs: Attrs | undefined): boolean {
  const f = attrs?.dataFormat;
  return f === undefined || f === 'NHWC' || f === 'channelsLast';
}

/** 0: none, 1: relu; undefined when the addon cannot fuse it. */
function activationCode(activation: unknown, prelu: Info | undefined): number | undefined {
  if (prelu !== undefined) return undefined;
  if (activation === undefined || activation === 'linear') return 0;
  if (activation === 'relu') return 1;
  return undefined;
}

function convForward(a: NativeAddon, depthwise: boolean, fused: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x, filter, bias, preluActivationWeights } = inputs;
    const act = fused ? activationCode(attrs?.activation, preluActivationWeights) : 0;
    if (act === undefined || !isNHWC(attrs) || !allFloat32(x, filter, bias) || x.shape.length !== 4) {
      return cpu({ inputs, backend, attrs } as never) as Info;
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
      return cpu({ inputs, backend, attrs } as never) as Info;
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
  return ({ inputs, backend, attrs }, cpu) => {
    const { dy, filter } = inputs;
    if (!isNHWC(attrs) || !allFloat32(dy, filter)) return cpu({ inputs, backend, attrs } as never) as Info;
    const inputShape = attrs!.inputShape as [number, number, number, number];
    const info = backpropConvInfo(inputShape, filter.shape, attrs!, depthwise);
    const dx = uninitialised(size(inputShape));
    a.convBackwardData(values(backend, dy), values(backend, filter), dx, convGeom(info, depthwise));
    return output(backend, [...inputShape], dx);
  };
}

function convBackpropFilter(a: NativeAddon, depthwise: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x, dy } = inputs;
    if (!isNHWC(attrs) || !allFloat32(x, dy)) return cpu({ inputs, backend, attrs } as never) as Info;
    const filterShape = attrs!.filterShape as [number, number, number, number];
    const info = backpropConvInfo(x.shape, filterShape, attrs!, depthwise);
    const dw = uninitialised(size(filterShape));
    a.convBackwardWeights(values(backend, x), values(backend, dy), dw, convGeom(info, depthwise));
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
  return ({ inputs, backend, attrs }, cpu) => {
    const { x } = inputs;
    if (!allFloat32(x) || x.shape.length !== 4) return cpu({ inputs, backend, attrs } as never) as Info;
    const info = poolInfo(x.shape, attrs!);
    const y = uninitialised(size(info.outShape));
    a.maxPool(values(backend, x), y, poolGeom(info));
    return output(backend, info.outShape, y);
  };
}

function maxPoolGrad(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { dy, input } = inputs;
    if (!allFloat32(dy, input)) return cpu({ inputs, backend, attrs } as never) as Info;
    const info = poolInfo(input.shape, attrs!);
    const dx = uninitialised(size(input.shape));
    a.maxPoolGrad(values(backend, dy), values(backend, input), dx, poolGeom(info));
    return output(backend, [...input.shape], dx);
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
  return ({ inputs, backend, attrs }, cpu) => {
    const { a: lhs, b: rhs, bias, preluActivationWeights } = inputs;
    const act = fused ? activationCode(attrs?.activation, preluActivationWeights) : 0;
    const batches = matMulBatches(lhs.shape, rhs.shape);
    const transA = Boolean(attrs?.transposeA);
    const transB = Boolean(attrs?.transposeB);
    const m = transA ? lhs.shape[lhs.shape.length - 1] : lhs.shape[lhs.shape.length - 2];
    const k = transA ? lhs.shape[lhs.shape.length - 2] : lhs.shape[lhs.shape.length - 1];
    const n = transB ? rhs.shape[rhs.shape.length - 2] : rhs.shape[rhs.shape.length - 1];
    const biasOk = bias === undefined || (size(bias.shape) === n && bias.shape[bias.shape.length - 1] === n);
    if (act === undefined || !batches || !biasOk || !allFloat32(lhs, rhs, bias) || lhs.shape.length < 2 || rhs.shape.length < 2) {
      return cpu({ inputs, backend, attrs } as never) as Info;
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

const enum BroadcastMode {
  Full = 0,
  /** The operand repeats once per block of `inner` output elements (e.g. [C] against [N,H,W,C]). */
  PerElementOfBlock = 1,
  /** One operand value per block (e.g. [N,1] against [N,C]). */
  PerBlock = 2,
  Scalar = 3,
}

/** How one operand of a broadcasting binary op maps onto the output, with the block size it needs. */
function broadcastMode(shape: number[], out: number[]): { mode: BroadcastMode; inner?: number } | undefined {
  const n = size(shape);
  if (n === size(out)) return { mode: BroadcastMode.Full };
  if (n === 1) return { mode: BroadcastMode.Scalar };
  const padded = [...new Array(out.length - shape.length).fill(1), ...shape];
  const first = padded.findIndex((d) => d !== 1);
  if (padded.slice(first).every((d, i) => d === out[first + i])) {
    return { mode: BroadcastMode.PerElementOfBlock, inner: size(out.slice(first)) };
  }
  let last = padded.length - 1;
  while (padded[last] === 1) last--;
  if (padded.slice(0, last + 1).every((d, i) => d === out[i])) {
    return { mode: BroadcastMode.PerBlock, inner: size(out.slice(last + 1)) };
  }
  return undefined;
}

function binary(a: NativeAddon, op: number): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { a: lhs, b: rhs } = inputs;
    const fallback = () => cpu({ inputs, backend, attrs } as never) as Info;
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

function unary(a: NativeAddon, op: number): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x } = inputs;
    if (!allFloat32(x)) return cpu({ inputs, backend, attrs } as never) as Info;
    const y = uninitialised(size(x.shape));
    a.unary(op, values(backend, x), y, Number(attrs?.alpha ?? 0));
    return output(backend, [...x.shape], y);
  };
}

/** Sum or mean over leading or trailing axes (batch-norm statistics, bias gradients, losses). */
function reduce(a: NativeAddon, mean: boolean): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x } = inputs;
    const fallback = () => cpu({ inputs, backend, attrs } as never) as Info;
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
    if (trailing) a.sum(values(backend, x), y, 1, kept, reduced, scale);
    else a.sum(values(backend, x), y, 0, reduced, kept, scale);
    return output(backend, outShape, y);
  };
}

function tile(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x } = inputs;
    const reps = attrs?.reps as number[];
    if (!allFloat32(x) || x.shape.length === 0 || size(x.shape) === 0) return cpu({ inputs, backend, attrs } as never) as Info;
    const outShape = x.shape.map((d, i) => d * reps[i]);
    const y = uninitialised(size(outShape));
    if (y.length > 0) a.tile(values(backend, x), y, Int32Array.from(x.shape), Int32Array.from(outShape));
    return output(backend, outShape, y);
  };
}

/** FusedBatchNorm when every statistic has one value per channel (last axis) or a single value. */
function batchNorm(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }, cpu) => {
    const { x, mean, variance, scale, offset } = inputs;
    const fallback = () => cpu({ inputs, backend, attrs } as never) as Info;
    if (!allFloat32(x, mean, variance, scale, offset) || x.shape.length === 0) return fallback();
    const channels = x.shape[x.shape.length - 1];
    const perChannel = (t: Info | undefined, fill: number): Float32Array | undefined => {
      if (t === undefined) return new Float32Array(channels).fill(fill);
      const v = values(backend, t);
      if (v.length === channels) return v;
      return v.length === 1 ? new Float32Array(channels).fill(v[0]) : undefined;
    };
    const [m, v, sc, off] = [perChannel(mean, 0), perChannel(variance, 1), perChannel(scale, 1), perChannel(offset, 0)];
    if (!m || !v || !sc || !off || channels === 0) return fallback();
    const y = uninitialised(size(x.shape));
    a.batchNorm(values(backend, x), m, v, sc, off, Number(attrs?.varianceEpsilon ?? 0.001), y);
    return output(backend, [...x.shape], y);
  };
}

/** Kernels with no tfjs counterpart, run only by the gradients in registerFusedGradients. */
const NATIVE_RELU_GRAD = 'NativeReluGrad';

function reluGrad(a: NativeAddon): NativeKernel {
  return ({ inputs, backend }) => {
    const { dy, x } = inputs;
    const y = uninitialised(size(x.shape));
    a.reluGrad(values(backend, dy), values(backend, x), y);
    return output(backend, [...x.shape], y);
  };
}

/**
 * Gradients that tfjs computes as chains of activation-sized ops, replaced by one fused native
 * kernel while the native backend is active (tfjs's gradient registry is global, so on any other
 * backend, or for inputs the fused kernel does not take, the original gradient runs unchanged).
 */
function registerFusedGradients(a: NativeAddon): void {
  registerBatchNormGradient(a);
  const original = tf.getGradient(tf.Relu);
  if (!original) return;
  tf.registerGradient({
    ...original,
    gradFunc: (dy, saved, attrs) => {
      const dyT = dy as tf.Tensor;
      const [x] = saved;
      const fused = tf.getBackend() === NATIVE_BACKEND && allFloat32(dyT, x) && size(dyT.shape) === size(x.shape);
      if (!fused) return original.gradFunc(dy, saved, attrs);
      return { x: () => tf.engine().runKernel(NATIVE_RELU_GRAD, { dy: dyT, x }) as tf.Tensor };
    },
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
  const original = tf.getGradient(tf.FusedBatchNorm);
  if (!original) return;
  tf.registerGradient({
    ...original,
    gradFunc: (dy, saved, attrs) => {
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
      if (!fused) return original.gradFunc(dy, saved, attrs);
      const backend = tf.backend() as Backend;
      // Tensors still held by another backend (made before a setBackend) take tfjs's path, which moves them.
      const local = [dyT, x, mean, variance, scale].every((t) => t == null || backend.data.has(t.dataId));
      if (!local) return original.gradFunc(dy, saved, attrs);
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
    },
  });
}

const NATIVE_ADAM = 'NativeAdam';

function adamKernel(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { value, gradient, m, v } = inputs;
    const n = size(value.shape);
    const [w2, m2, v2] = [uninitialised(n), uninitialised(n), uninitialised(n)];
    a.adam(
      values(backend, value),
      values(backend, gradient),
      values(backend, m),
      values(backend, v),
      Float64Array.from(attrs!.params as number[]),
      w2,
      m2,
      v2,
    );
    return [w2, m2, v2].map((d) => output(backend, [...value.shape], d));
  };
}

type NamedGradient = { name: string; tensor: tf.Tensor };

/** AdamOptimizer's private state, as tfjs 4 keeps it. */
interface AdamInternals {
  beta1: number;
  beta2: number;
  epsilon: number;
  learningRate: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  accumulatedFirstMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  accumulatedSecondMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  incrementIterations(): void;
}

/**
 * tfjs's Adam update is 14 tensor ops per variable, each a full pass over it (most of a training
 * step's Multiply/Add/RealDiv calls). While `native` is the active backend and every gradient is
 * float32, applyGradients does the same bookkeeping as tfjs 4.22's but updates each variable with
 * one fused kernel; otherwise tfjs's own method runs.
 */
function registerFusedAdam(): void {
  const proto = tf.AdamOptimizer.prototype as unknown as { applyGradients(g: tf.NamedTensorMap | NamedGradient[]): void };
  const original = proto.applyGradients;
  proto.applyGradients = function (this: AdamInternals, variableGradients) {
    const named = Array.isArray(variableGradients);
    const grads = named ? variableGradients.map((v) => v.tensor) : Object.values(variableGradients);
    const ok =
      tf.getBackend() === NATIVE_BACKEND &&
      grads.every((g) => g == null || g.dtype === 'float32') &&
      Array.isArray(this.accumulatedFirstMoment) &&
      this.accBeta1 instanceof tf.Variable;
    if (!ok) return original.call(this, variableGradients);
    const varNames = named ? variableGradients.map((v) => v.name) : Object.keys(variableGradients);
    tf.tidy(() => {
      const c1 = 1 - this.accBeta1.dataSync()[0];
      const c2 = 1 - this.accBeta2.dataSync()[0];
      // tfjs makes these float32 scalars: round them the same way.
      const params = [this.beta1, 1 - this.beta1, this.beta2, 1 - this.beta2, c1, c2, this.epsilon, -this.learningRate].map(Math.fround);
      varNames.forEach((name, i) => {
        const value = tf.engine().registeredVariables[name];
        if (this.accumulatedFirstMoment[i] == null) {
          this.accumulatedFirstMoment[i] = { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        if (this.accumulatedSecondMoment[i] == null) {
          this.accumulatedSecondMoment[i] = { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        const gradient = named ? (variableGradients as NamedGradient[])[i].tensor : (variableGradients as tf.NamedTensorMap)[name];
        if (gradient == null) return;
        const m = this.accumulatedFirstMoment[i]!.variable;
        const v = this.accumulatedSecondMoment[i]!.variable;
        const [w2, m2, v2] = tf.engine().runKernel(NATIVE_ADAM, { value, gradient, m, v }, { params } as never) as tf.Tensor[];
        m.assign(m2);
        v.assign(v2);
        value.assign(w2);
      });
      this.accBeta1.assign(tf.mul(this.accBeta1, this.beta1));
      this.accBeta2.assign(tf.mul(this.accBeta2, this.beta2));
    });
    this.incrementIterations();
  };
}

/** The kernels the addon accelerates; every other CPU kernel is registered unchanged. */
function nativeKernels(a: NativeAddon): Record<string, NativeKernel> {
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
    [tf.BatchMatMul]: matMul(a, false),
    [tf._FusedMatMul]: matMul(a, true),
    [tf.Add]: binary(a, 0),
    [tf.Sub]: binary(a, 1),
    [tf.Multiply]: binary(a, 2),
    [tf.RealDiv]: binary(a, 3),
    [tf.SquaredDifference]: binary(a, 4),
    [tf.Relu]: unary(a, 0),
    [tf.Step]: unary(a, 1),
    [tf.Sqrt]: unary(a, 2),
    [tf.Square]: unary(a, 3),
    [tf.Rsqrt]: unary(a, 4),
    [tf.Neg]: unary(a, 5),
    [tf.Floor]: unary(a, 6),
    [tf.Sum]: reduce(a, false),
    [tf.Mean]: reduce(a, true),
    [tf.Tile]: tile(a),
    [tf.FusedBatchNorm]: batchNorm(a),
  };
}

/** Names of the kernels the addon runs (the rest are tfjs's CPU kernels). */
export function nativeKernelNames(): string[] {
  const loaded = loadNativeAddon();
  return 'addon' in loaded ? Object.keys(nativeKernels(loaded.addon)) : [];
}

const fallbackCounts = new Map<string, number>();

/**
 * How often each accelerated kernel fell back to tfjs's CPU code, keyed by
 * "Kernel dtype shapes": what to implement next when a model is slower than expected.
 */
export function nativeFallbacks(): Map<string, number> {
  return new Map(fallbackCounts);
}

function countingFallback(name: string, cpu: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const inputs = Object.values(args.inputs as Record<string, Info>).filter(Boolean);
    const key = `${name} ${inputs.map((t) => `${t.dtype}[${t.shape.join(',')}]`).join(' ')}`;
    fallbackCounts.set(key, (fallbackCounts.get(key) ?? 0) + 1);
    return cpu(args);
  };
}

const warned = new Set<string>();
function warnOnce(kernel: string, err: unknown): void {
  if (warned.has(kernel) || process.env.PNEUMO_NATIVE_QUIET) return;
  warned.add(kernel);
  console.warn(`[native] ${kernel}: ${(err as Error).message}; using the CPU kernel for such calls.`);
}

function registerKernels(a: NativeAddon): void {
  const reluGradKernel = reluGrad(a);
  tf.registerKernel({
    kernelName: NATIVE_RELU_GRAD,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args) =>
      reluGradKernel(args as unknown as KernelArgs, () => {
        throw new Error(`${NATIVE_RELU_GRAD} has no CPU fallback`);
      }) as tf.TensorInfo,
  });
  const adam = adamKernel(a);
  tf.registerKernel({
    kernelName: NATIVE_ADAM,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args) =>
      adam(args as unknown as KernelArgs, () => {
        throw new Error(`${NATIVE_ADAM} has no CPU fallback`);
      }) as tf.TensorInfo[],
  });
  const overrides = nativeKernels(a);
  for (const config of tf.getKernelsForBackend('cpu')) {
    const cpu = overrides[config.kernelName] ? countingFallback(config.kernelName, config.kernelFunc) : config.kernelFunc;
    const native = overrides[config.kernelName];
    const kernelFunc: tf.KernelFunc = native
      ? (args) => {
          try {
            return native(args as unknown as KernelArgs, cpu) as tf.TensorInfo;
          } catch (err) {
            // oneDNN rejects a few geometries tfjs accepts (e.g. ceil-rounded explicit padding):
            // the CPU kernel is the reference, so use it (and let it report real input errors).
            warnOnce(config.kernelName, err);
            return cpu(args);
          }
        }
      : cpu;
    tf.registerKernel({ ...config, backendName: NATIVE_BACKEND, kernelFunc });
  }
}
