/**
 * Small, careful helpers for writing kernels against the tfjs wasm backend's heap.
 *
 * Rules that keep them sound:
 * - A Float32Array view of the heap is invalidated whenever the heap grows (any allocation, including
 *   the output of another kernel), so views are taken after allocations, never held across them.
 * - An alias (a tensor that points inside another tensor's memory) must never go through
 *   backend.disposeData, which would free an interior pointer; releaseAlias unregisters it instead.
 */
import type { TensorInfo, DataType, NamedAttrMap } from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import { type RowCall, runRowCallJob } from './row-jobs';
import type { SimdLoops } from './simd';

interface WasmTensorData {
  id: number;
  memoryOffset: number;
  shape: number[];
  dtype: DataType;
  refCount: number;
}

/** The part of tfjs-backend-wasm's BackendWasm these kernels rely on. */
export interface WasmBackend {
  wasm: {
    HEAPU8: Uint8Array;
    /** Set by our threaded loader (setup.ts): the module's shared memory, whose buffer is always current. */
    sharedMemory?: WebAssembly.Memory;
    tfjs: { disposeData(id: number): void };
  };
  dataIdMap: {
    get(dataId: object): WasmTensorData;
    has(dataId: object): boolean;
    delete(dataId: object): void;
  };
  makeOutput(shape: number[], dtype: DataType, memoryOffset?: number): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  incRef(dataId: object): void;
}

/** Allocates an uninitialised float32 tensor on the wasm heap. */
export function allocate(backend: WasmBackend, shape: number[]): TensorInfo {
  return backend.makeOutput(shape, 'float32');
}

export function release(backend: WasmBackend, ...infos: TensorInfo[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

/** A fresh float32 view of a tensor's data (take it after the last allocation). */
export function view(backend: WasmBackend, info: TensorInfo): Float32Array {
  const { memoryOffset } = backend.dataIdMap.get(info.dataId);
  const size = info.shape.reduce((a, b) => a * b, 1);
  const buffer = backend.wasm.sharedMemory?.buffer ?? backend.wasm.HEAPU8.buffer;
  return new Float32Array(buffer, memoryOffset, size);
}

/** Where a tensor's data starts on the heap, in bytes (for the SIMD loops, which take addresses). */
export function byteOffset(backend: WasmBackend, info: TensorInfo): number {
  return backend.dataIdMap.get(info.dataId).memoryOffset;
}

/** A tensor sharing `base`'s memory from element `offset`, so kernels can read a shifted window without a copy. */
export function alias(backend: WasmBackend, base: TensorInfo, offset: number, shape: number[]): TensorInfo {
  const { memoryOffset } = backend.dataIdMap.get(base.dataId);
  return backend.makeOutput(shape, 'float32', memoryOffset + offset * 4);
}

/** Unregisters an alias without freeing memory it does not own (also drops wasm-side operator caches keyed by its id). */
export function releaseAlias(backend: WasmBackend, info: TensorInfo): void {
  if (!backend.dataIdMap.has(info.dataId)) return;
  const { id } = backend.dataIdMap.get(info.dataId);
  backend.wasm.tfjs.disposeData(id);
  backend.dataIdMap.delete(info.dataId);
}

/** The same data seen with another shape (no copy; the caller keeps ownership of the original). */
export function reshaped(info: TensorInfo, shape: number[]): TensorInfo {
  return { dataId: info.dataId, shape, dtype: info.dtype };
}

type KernelFn = (args: { inputs: Record<string, TensorInfo>; backend: unknown; attrs: NamedAttrMap }) => TensorInfo;

/** Calls a kernel registered for wasm directly (no engine, no tape): the output is a raw TensorInfo we own. */
export function runKernel(name: string, backend: WasmBackend, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap = {}): TensorInfo {
  const kernel = tf.getKernel(name, 'wasm');
  if (!kernel) throw new Error(`wasm kernel '${name}' is not registered`);
  return (kernel.kernelFunc as unknown as KernelFn)({ inputs, backend, attrs });
}

/** Where an NHWC batch (n images of h x w pixels, c channels) goes on a zero grid of hp x wp pixels: shifted by (top, left). */
export interface GridPlacement {
  n: number;
  h: number;
  w: number;
  c: number;
  hp: number;
  wp: number;
  top: number;
  left: number;
}

/**
 * Copies NHWC `src` into the NHWC grid `dst` as `g` places it, zeros elsewhere; out-of-grid parts are dropped. Only
 * the gaps between the copied rows are zeroed (the rows come in grid order): filling the whole grid first, 24 MB for a
 * block-2 filter gradient, cost about as much as the copy.
 */
export function copyIntoGrid(src: Float32Array, dst: Float32Array, g: GridPlacement): void {
  let zeroFrom = 0;
  forEachGridRow(g, (from, to, run) => {
    dst.fill(0, zeroFrom, to * g.c);
    dst.set(src.subarray(from * g.c, (from + run) * g.c), to * g.c);
    zeroFrom = (to + run) * g.c;
  });
  dst.fill(0, zeroFrom);
}

/**
 * The image rows that land on the grid: row(from, to, run) for each, with the row's first pixel that lands, the grid
 * pixel it lands on, and how many of the row's pixels land (pixel indices, not element offsets).
 */
export function forEachGridRow(g: GridPlacement, row: (from: number, to: number, run: number) => void): void {
  const { n, h, w, hp, wp, top, left } = g;
  const w0 = Math.max(0, -left);
  const w1 = Math.min(w, wp - left);
  if (w1 <= w0) return;
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < h; y++) {
      const yp = y + top;
      if (yp < 0 || yp >= hp) continue;
      row((b * h + y) * w + w0, (b * hp + yp) * wp + w0 + left, w1 - w0);
    }
  }
}

/**
 * A SIMD row loop (row-jobs.ts's RowCall) over `rows` rows of `values` values in all, split with the helper thread
 * where it runs and the call is large; returns the float64 totals of the loop's `sums` float32 partial sums (an
 * empty array for loops that sum nothing). The partial sums move into the totals every call.chunkRows rows (512 by
 * default), so rounding stays near float32's 1e-7. Each thread's region holds its partial sums and then
 * `scratchFloats` floats of scratch of its own.
 */
export function runRows(
  backend: WasmBackend,
  loops: SimdLoops,
  call: RowCall,
  rows: number,
  values: number,
  sums = 0,
  scratchFloats = 0,
): Float64Array {
  const scratch = twoThreadSums(backend, sums, 0, scratchFloats);
  try {
    return runRowCallJob(loops, () => view(backend, scratch.info).buffer, call, rows, values, sums, scratch.regions);
  } finally {
    release(backend, scratch.info);
  }
}

/** Floats in a 64-byte cache line. */
const LINE_FLOATS = 16;
const roundUp = (n: number, step: number) => Math.ceil(n / step) * step;

/**
 * Scratch for a job split across two threads (row-jobs.ts): per thread, `sums` float32 partial sums and
 * `perThreadScratch` floats more (padded to an even count together) and the sums' float64 totals, then `extra`
 * floats shared (extraAt). Each thread's region starts on a cache line of its own. The loops add into their partial
 * sums 16 bytes at a time on every row, and dlmalloc's allocations are only 8-byte aligned: with a sum vector across
 * two cache lines, BatchNormTrainGradRelu at 32x75x75x32 took 6.6 ms, against 5.0-5.5 aligned.
 */
export function twoThreadSums(
  backend: WasmBackend,
  sums: number,
  extra: number,
  perThreadScratch = 0,
): { info: TensorInfo; regions: (thread: 0 | 1) => { partialAt: number; totalAt: number }; extraAt: number } {
  const padded = roundUp(sums + perThreadScratch, 2);
  const perThread = roundUp(padded + 2 * sums, LINE_FLOATS);
  const info = allocate(backend, [2 * perThread + extra + LINE_FLOATS]);
  const at = roundUp(byteOffset(backend, info), 4 * LINE_FLOATS);
  const regions = (thread: 0 | 1) => ({ partialAt: at + thread * perThread * 4, totalAt: at + (thread * perThread + padded) * 4 });
  return { info, regions, extraAt: at + 2 * perThread * 4 };
}
