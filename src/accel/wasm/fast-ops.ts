/**
 * Replacements for stock wasm kernels that a training step of our CNN spends most time in, found by
 * profiling one step (see src/cli/bench-train.ts --profile):
 * - Tile: the batch-norm gradient tiles a [1,1,1,C] vector to the full activation shape; the stock
 *   kernel does it element by element. Here: block copies, doubling.
 * - Sum / Mean over leading axes (bias, batch-norm and moment gradients reduce [N,H,W] per channel):
 *   the stock kernel transposes the whole tensor first. Here: one pass accumulating rows.
 * - Identity: the stock kernel copies the data; sharing it is enough.
 * - BatchMatMul with a transposed operand (dense-layer gradients) runs a slow generic loop in the stock
 *   kernel; an explicit transpose first lets it take XNNPACK's fast path.
 * - Multiply / Add / Sub of an activation and a per-channel vector ([C] or [1,1,1,C]: bias, batch norm
 *   and their gradients): the stock broadcasting path is ~6x slower than a same-shape op. Here: SIMD row loops.
 * - FusedBatchNorm (stock: ~20 ms for 32x75x75x32): one SIMD pass with per-channel coefficients.
 * - Cast to the dtype a tensor already has (Keras layers cast their inputs): shared, like Identity.
 * Anything else is delegated to the stock kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { TensorInfo } from '@tensorflow/tfjs';
import { allocate, byteOffset, release, reshaped, runKernel, runRows, view } from './heap';
import type { RowCall } from './row-jobs';
import { simdLoops } from './simd';
import { KernelArgs, callStock } from './stock';

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Repeats `block` (already written at dst[at .. at+len)) until it fills `times` copies, by doubling copies. */
function repeatInPlace(dst: Float32Array, at: number, len: number, times: number): void {
  let filled = 1;
  while (filled < times) {
    const n = Math.min(filled, times - filled);
    dst.copyWithin(at + filled * len, at, at + n * len);
    filled += n;
  }
}

function tile(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  const reps = attrs.reps as number[];
  if (x.dtype !== 'float32' || reps.length !== x.shape.length) return callStock('Tile', args);
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = allocate(backend, outShape);
  // Repeat innermost axes first; the last (outermost) pass writes straight into the heap output, so the
  // full-size result is never built in a JS array (the batch-norm gradient tiles to activation size).
  const lastAxis = reps.findIndex((r) => r !== 1);
  let cur: Float32Array = view(backend, x).slice();
  const curShape = x.shape.slice();
  for (let axis = curShape.length - 1; axis >= 0; axis--) {
    const r = reps[axis];
    if (r === 1) continue;
    const outer = sizeOf(curShape.slice(0, axis));
    const inner = sizeOf(curShape.slice(axis));
    const next = axis === lastAxis ? view(backend, out) : new Float32Array(outer * inner * r);
    for (let o = 0; o < outer; o++) {
      next.set(cur.subarray(o * inner, (o + 1) * inner), o * inner * r);
      repeatInPlace(next, o * inner * r, inner, r);
    }
    cur = next;
    curShape[axis] *= r;
  }
  if (lastAxis < 0) view(backend, out).set(cur); // all reps 1: a copy
  return out;
}

/** Axes as a sorted list of non-negative ints. */
function normalisedAxes(axis: number | number[], rank: number): number[] {
  return tf.util.parseAxisParam(axis, new Array(rank).fill(1)).sort((a, b) => a - b);
}

function isLeadingPrefix(axes: number[]): boolean {
  return axes.every((a, i) => a === i);
}

function reduceLeading(args: KernelArgs, kernel: 'Sum' | 'Mean'): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x } = inputs;
  const axes = normalisedAxes(attrs.axis as number | number[], x.shape.length);
  if (x.dtype !== 'float32' || axes.length === 0 || axes.length === x.shape.length || !isLeadingPrefix(axes)) {
    return callStock(kernel, args);
  }
  const rows = sizeOf(x.shape.slice(0, axes.length));
  const cols = sizeOf(x.shape.slice(axes.length));
  const outShape = attrs.keepDims ? x.shape.map((d, i) => (i < axes.length ? 1 : d)) : x.shape.slice(axes.length);
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (loops && cols % 4 === 0) {
    const out = simdColumnSums(args, loops, rows, cols);
    if (kernel === 'Mean') {
      const o = view(backend, out);
      for (let k = 0; k < cols; k++) o[k] /= rows;
    }
    return reshaped(out, outShape);
  }
  // The stock kernel is fast on a 2D [rows, cols] view reduced over axis 0 (measured 11 ms for 11.5M
  // floats) but transposes first when given the 4D shape (35 ms): hand it the 2D view.
  const out = callStock(kernel, { inputs: { x: reshaped(x, [rows, cols]) }, backend, attrs: { axis: [0], keepDims: false } });
  return reshaped(out, outShape);
}

function simdColumnSums(args: KernelArgs, loops: NonNullable<ReturnType<typeof simdLoops>>, rows: number, cols: number): TensorInfo {
  const { backend } = args;
  const out = allocate(backend, [cols]);
  // colsum(src, sums, rows, colsBytes), sums in the thread's partial sums.
  const call: RowCall = {
    loop: 'colsum',
    args: [byteOffset(backend, args.inputs.x), 0, 0, cols * 4],
    strides: [cols * 4, 0, 0, 0],
    countArg: 2,
    partialArgs: 0b10,
  };
  view(backend, out).set(runRows(backend, loops, call, rows, rows * cols, cols));
  return out;
}

/**
 * t with its last two axes swapped. With one leading batch, in 32x32 tiles: the stock Transpose goes element by
 * element with index arithmetic (13.7 ms for a 4096x512 dense kernel, this 7.6 ms).
 */
function swapLastTwo(backend: KernelArgs['backend'], t: TensorInfo): TensorInfo {
  const rank = t.shape.length;
  const perm = [...Array(rank - 2).keys(), rank - 1, rank - 2];
  if (t.dtype !== 'float32' || !isSingleBatch(t)) return runKernel('Transpose', backend, { x: t }, { perm });
  const [rows, cols] = t.shape.slice(-2);
  const out = allocate(
    backend,
    perm.map((p) => t.shape[p]),
  );
  const src = view(backend, t);
  const dst = view(backend, out);
  const tile = 32;
  for (let r0 = 0; r0 < rows; r0 += tile) {
    const r1 = Math.min(rows, r0 + tile);
    for (let c0 = 0; c0 < cols; c0 += tile) {
      const c1 = Math.min(cols, c0 + tile);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
    }
  }
  return out;
}

function isSingleBatch(t: TensorInfo): boolean {
  return sizeOf(t.shape.slice(0, -2)) === 1;
}

/** The largest divisor of k up to 64: the row width of k taken as a grid of rows (plainMatMul). */
function rowWidth(k: number): number {
  for (let w = Math.min(64, k); w > 1; w--) if (k % w === 0) return w;
  return 1;
}

/**
 * a·b without transposes. The stock kernel packs b, its XNNPACK weights, on every call: for a dense layer's forward
 * pass in training (x[32, 4096] · W[4096, 512], W new every step) that took 19.5 ms of a step. A small a times a
 * large b is the sum over k of aᵀ[k]'s outer product with b[k], which is what a 1x1 convolution's filter gradient
 * computes over its pixels: with aᵀ as the input and b as dy, laid as rows of k, kernels.ts's SIMD filter gradient
 * (split across two threads where the helper runs, float64 totals) takes it where both lie.
 */
function plainMatMul(args: KernelArgs): TensorInfo {
  const { inputs, backend } = args;
  const { a, b } = inputs;
  const [m, k] = a.shape.slice(-2);
  const n = b.shape[b.shape.length - 1];
  const width = rowWidth(k);
  const small = m * k + m * n < n * k;
  if (!small || !isSingleBatch(a) || !isSingleBatch(b) || n % 16 !== 0 || width < 16 || !simdLoops(backend.wasm.sharedMemory)) {
    return callStock('BatchMatMul', args);
  }
  const aT = swapLastTwo(backend, a);
  const grid = [1, k / width, width];
  const attrs = { strides: 1, pad: 'valid', dataFormat: 'NHWC', dilations: 1, filterShape: [1, 1, m, n] };
  const product = runKernel('Conv2DBackpropFilter', backend, { x: reshaped(aT, [...grid, m]), dy: reshaped(b, [...grid, n]) }, attrs);
  release(backend, aT);
  return reshaped(product, [...a.shape.slice(0, -1), n]);
}

function batchMatMul(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { a, b } = inputs;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return callStock('BatchMatMul', args);
  if (!(attrs.transposeA || attrs.transposeB)) return plainMatMul(args);
  if (attrs.transposeB && !attrs.transposeA && isSingleBatch(a) && isSingleBatch(b)) {
    // a·bᵀ = (b·aᵀ)ᵀ: when a is the small operand (a dense layer's input gradient: dy[32, 512] · W[4096, 512]ᵀ)
    // this transposes and packs a and the result instead of the large b (measured 25 -> ~3 ms for that case).
    const [m, k] = a.shape.slice(-2);
    const n = b.shape[b.shape.length - 2];
    if (m * k + m * n < n * k) {
      const aT = swapLastTwo(backend, a);
      const outT = callStock('BatchMatMul', {
        inputs: { a: b, b: aT },
        backend,
        attrs: { ...attrs, transposeA: false, transposeB: false },
      });
      const out = swapLastTwo(backend, outT);
      release(backend, aT, outT);
      return out;
    }
  }
  const at = attrs.transposeA ? swapLastTwo(backend, a) : a;
  const bt = attrs.transposeB ? swapLastTwo(backend, b) : b;
  const out = callStock('BatchMatMul', { inputs: { a: at, b: bt }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
  if (at !== a) release(backend, at);
  if (bt !== b) release(backend, bt);
  return out;
}

/**
 * Identity shares the data (reference count) like the cpu backend's, instead of the stock wasm copy:
 * sound because no kernel writes into its inputs, and variables change by swapping data, not in place.
 */
function identity({ inputs, backend }: KernelArgs): TensorInfo {
  const { x } = inputs;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/** True when `small` is a per-channel vector for `big`: [C] or [1, ..., 1, C] with C = big's last dim. */
function isChannelVector(small: TensorInfo, big: TensorInfo): boolean {
  const c = big.shape[big.shape.length - 1];
  return (
    small.shape.length >= 1 &&
    small.shape.length <= big.shape.length &&
    big.shape.length >= 2 &&
    small.shape[small.shape.length - 1] === c &&
    sizeOf(small.shape) === c
  );
}

type RowOp = 'rowscale' | 'rowadd' | 'rowsub';

/**
 * An activation combined with a per-channel vector by a SIMD row loop; undefined (use the stock kernel)
 * for anything else. `commutes` lets the vector come first (a * b, a + b); a - b needs the vector second.
 */
function perChannel(args: KernelArgs, rowOp: RowOp, commutes: boolean): TensorInfo | undefined {
  const { inputs, backend } = args;
  const { a, b } = inputs;
  const loops = simdLoops(backend.wasm.sharedMemory);
  if (!loops || a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const [big, small] = sizeOf(a.shape) >= sizeOf(b.shape) ? [a, b] : [b, a];
  if (!commutes && big !== a) return undefined;
  const c = big.shape[big.shape.length - 1];
  if (c % 4 !== 0 || sizeOf(big.shape) <= c || !isChannelVector(small, big)) return undefined;
  const out = allocate(backend, big.shape.slice());
  loops[rowOp](byteOffset(backend, big), byteOffset(backend, small), byteOffset(backend, out), sizeOf(big.shape) / c, c * 4);
  return out;
}

const multiply = (args: KernelArgs) => perChannel(args, 'rowscale', true) ?? callStock('Multiply', args);
const add = (args: KernelArgs) => perChannel(args, 'rowadd', true) ?? callStock('Add', args);
const sub = (args: KernelArgs) => perChannel(args, 'rowsub', false) ?? callStock('Sub', args);

/** Batch norm as (x - mean) * (scale / sqrt(variance + epsilon)) + offset, per channel, with the SIMD loop. */
function fusedBatchNorm(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  const { x, mean, variance, offset, scale } = inputs;
  const loops = simdLoops(backend.wasm.sharedMemory);
  const c = x.shape[x.shape.length - 1];
  const vectors = [mean, variance, offset, scale].filter((t): t is TensorInfo => t !== undefined);
  if (
    !loops ||
    c % 4 !== 0 ||
    x.dtype !== 'float32' ||
    sizeOf(x.shape) <= c ||
    !vectors.every((t) => t.dtype === 'float32' && isChannelVector(t, x))
  ) {
    return callStock('FusedBatchNorm', args);
  }
  const epsilon = (attrs.varianceEpsilon as number | undefined) ?? 0.001;
  const coefficients = allocate(backend, [2 * c]); // per-channel multiplier, then offset
  const out = allocate(backend, x.shape.slice());
  const coeff = view(backend, coefficients);
  const v = view(backend, variance);
  const s = scale ? view(backend, scale) : undefined;
  const o = offset ? view(backend, offset) : undefined;
  for (let k = 0; k < c; k++) {
    coeff[k] = (s ? s[k] : 1) / Math.sqrt(v[k] + epsilon);
    coeff[c + k] = o ? o[k] : 0;
  }
  const at = byteOffset(backend, coefficients);
  const rows = sizeOf(x.shape) / c;
  // rowaffine(x, mean, a, offset, out, rows, colsBytes)
  const call: RowCall = {
    loop: 'rowaffine',
    args: [byteOffset(backend, x), byteOffset(backend, mean), at, at + c * 4, byteOffset(backend, out), 0, c * 4],
    strides: [c * 4, 0, 0, 0, c * 4, 0, 0],
    countArg: 5,
    partialArgs: 0,
  };
  runRows(backend, loops, call, rows, rows * c);
  release(backend, coefficients);
  return out;
}

function cast(args: KernelArgs): TensorInfo {
  const { inputs, backend, attrs } = args;
  if (attrs.dtype === inputs.x.dtype) return identity({ inputs, backend, attrs });
  return callStock('Cast', args);
}

export const FAST_OP_KERNELS: Array<[string, (args: KernelArgs) => TensorInfo]> = [
  ['Identity', identity],
  ['Tile', tile],
  ['Sum', (args) => reduceLeading(args, 'Sum')],
  ['Mean', (args) => reduceLeading(args, 'Mean')],
  ['BatchMatMul', batchMatMul],
  ['Multiply', multiply],
  ['Add', add],
  ['Sub', sub],
  ['FusedBatchNorm', fusedBatchNorm],
  ['Cast', cast],
];
