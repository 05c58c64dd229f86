/**
 * Row loops split across two threads where a helper thread runs (helper.ts, started by setup.ts in Node): the SIMD
 * loops of the stride-1 filter gradients (kernels.ts) and the memory-bound row loops of the fused training kernels
 * (RowCall: the ReLU mask and its sums, batch-norm's sums, gradient, statistics and inference pass). They ran on the
 * main thread alone while XNNPACK's pool sat idle: block 1's 16 -> 16 filter gradient was the largest kernel of a
 * wasm training step, and the row loops together took 90 ms of a step on one thread.
 * This module imports nothing from Node, so kernels.ts (and with it the web page's bundle) stays free of it.
 */
import type { SimdLoops } from './simd';

/** What a RowSplitter is given: a filter-gradient job (FilterGradJob's fields) or a row call (rowCallFields). */
export const FILTER_GRAD_JOB = 0;
export const ROW_CALL_JOB = 1;

/**
 * What one call of filterGradRows needs, in this order (the helper thread reads it from a shared Int32Array):
 * loop 0 = convgrad(a = ciBytes, b = coBytes, c = table rows), loop 1 = dwgrad (dwgrad9 for 9 taps; a = cBytes,
 * b = taps); byte addresses on the wasm heap of the input grid, dy, the loop's int32 table, the thread's float32 partial sums and
 * its float64 totals (8-byte aligned); `sums` values; the output rows [r0, r1) of outHeight per image, each
 * outWidth pixels; the grid's rows per image (hp) and bytes per row; dy's bytes per row.
 */
export const JOB_FIELDS = [
  'loop',
  'gridAt',
  'dyAt',
  'tableAt',
  'accAt',
  'totalAt',
  'sums',
  'r0',
  'r1',
  'outHeight',
  'outWidth',
  'hp',
  'gridRowBytes',
  'dyRowBytes',
  'a',
  'b',
  'c',
] as const;
export type FilterGradJob = Record<(typeof JOB_FIELDS)[number], number>;

/**
 * Runs rows [r0, r1) of a job: the loop's float32 sums are moved into the float64 totals every 256 positions, so
 * long sums keep float32's rounding small. Self-contained on purpose: helper.ts runs this function's source text
 * in its thread, so it may use nothing but its arguments.
 */
export function filterGradRows(loops: SimdLoops, buffer: ArrayBufferLike, job: ArrayLike<number>): void {
  const [loop, gridAt, dyAt, tableAt, accAt, totalAt, sums, r0, r1, outHeight, outWidth, hp, gridRowBytes, dyRowBytes, a, b, c] =
    Array.from(job);
  const partial = new Float32Array(buffer, accAt, sums);
  const total = new Float64Array(buffer, totalAt, sums);
  partial.fill(0);
  total.fill(0);
  let pending = 0;
  for (let r = r0; r < r1; r++) {
    const image = Math.floor(r / outHeight);
    const xRow = gridAt + (image * hp + (r - image * outHeight)) * gridRowBytes;
    const dyRow = dyAt + r * dyRowBytes;
    if (loop === 0) loops.convgrad(xRow, dyRow, accAt, outWidth, a, b, tableAt, c);
    else if (b === 9) loops.dwgrad9(xRow, dyRow, accAt, outWidth, a, tableAt);
    else loops.dwgrad(xRow, dyRow, accAt, outWidth, a, tableAt, b);
    pending += outWidth;
    if (pending >= 256 || r === r1 - 1) {
      for (let k = 0; k < sums; k++) total[k] += partial[k];
      partial.fill(0);
      pending = 0;
    }
  }
}

/** A second thread for part of a job's rows, while the calling thread runs the rest. */
export interface RowSplitter {
  /** Posts a job of `kind` (FILTER_GRAD_JOB, ROW_CALL_JOB), its fields already holding the second thread's rows and
   * its own partial sums and totals; false: declined. */
  start(kind: number, fields: number[]): boolean;
  /** Waits until the second thread has written its totals; throws if it failed (the caller then does its rows). */
  finish(): void;
}

let splitter: RowSplitter | undefined;

/** Where the helper thread is running (setup.ts), half of each large job's rows go to it; undefined stops that. */
export function useRowSplitter(s: RowSplitter | undefined): void {
  splitter = s;
}

/** The splitter in use, if any. */
export const rowSplitter = (): RowSplitter | undefined => splitter;

/** Below this many multiply-adds a job stays on one thread: waking the helper costs about as much as it saves. */
const MIN_SPLIT_WORK = 4_000_000;

/**
 * The job's totals (float64, `sums` values): rows on this thread and, for large jobs with a helper, half on it.
 * `second` gives the helper's partial-sum and total addresses (allocated by the caller like the job's own).
 */
export function runFilterGradJob(
  loops: SimdLoops,
  memory: () => ArrayBufferLike,
  job: FilterGradJob,
  second: { accAt: number; totalAt: number } | undefined,
): Float64Array {
  const rows = job.r1 - job.r0;
  const work = rows * job.outWidth * job.sums;
  const split = job.r0 + Math.floor(rows / 2);
  const fields = (j: FilterGradJob) => JOB_FIELDS.map((f) => j[f]);
  const halves: [number[], number[]] | undefined =
    second !== undefined && rows >= 2 && work >= MIN_SPLIT_WORK
      ? [fields({ ...job, r1: split }), fields({ ...job, r0: split, accAt: second.accAt, totalAt: second.totalAt })]
      : undefined;
  const helped = splitWithHelper(FILTER_GRAD_JOB, (f) => filterGradRows(loops, memory(), f), fields(job), halves);
  return addTotals(memory(), job.sums, job.totalAt, helped ? second!.totalAt : undefined);
}

/**
 * Runs `whole` here, or, where `halves` is given and the helper takes its second half, the first half here while the
 * helper runs the second. If the helper fails, training goes on without it: its half is run here, and later jobs
 * stay on this thread. Returns whether the job was split (the second half's totals are then in its own region).
 */
function splitWithHelper(
  kind: number,
  run: (fields: number[]) => void,
  whole: number[],
  halves: [number[], number[]] | undefined,
): boolean {
  const started = halves !== undefined && splitter !== undefined && splitter.start(kind, halves[1]);
  run(started ? halves![0] : whole);
  if (started) {
    try {
      splitter!.finish();
    } catch (err) {
      console.warn(`wasm: ${(err as Error).message}; continuing on one thread`);
      splitter = undefined;
      run(halves![1]);
    }
  }
  return started;
}

/** A copy of the float64 totals at totalAt, plus those at secondAt when given. */
function addTotals(buffer: ArrayBufferLike, sums: number, totalAt: number, secondAt: number | undefined): Float64Array {
  const totals = new Float64Array(new Float64Array(buffer, totalAt, sums));
  if (secondAt !== undefined) {
    const second = new Float64Array(buffer, secondAt, sums);
    for (let k = 0; k < sums; k++) totals[k] += second[k];
  }
  return totals;
}

// Not exported under this name: runRowCall's source text must refer to it as a plain identifier (an exported const
// compiles to `exports.X`), which the helper thread defines.
const rowCallLoops = [
  'relugradsums',
  'bnsums',
  'bngrad',
  'bngradrelu',
  'bnmoments',
  'rowaffine',
  'colsum',
  'maxpool2x2',
  'maxpool2x2relu',
  'winograd',
  'winogradrelu',
  'winogradfilter',
] as const;
/** The SIMD loops a RowCall may name; the index travels to the helper thread, which is given this list too. */
export const ROW_CALL_LOOPS = rowCallLoops;

/**
 * One SIMD row loop (simd.ts) over rows of channels-last data, described as data so the helper thread can run part
 * of it: the loop's arguments for row 0, the bytes each one moves per row, which one takes the row count (-1: the
 * loop does one row per call; a row may be a whole image, as for an odd-height max-pool gradient), which ones are
 * byte offsets into the running thread's own region (its float32 partial sums, then its scratch; bit i for argument
 * i), and how many rows a call takes at most (512 when not given): the partial sums move into the float64 totals
 * after each call.
 */
export interface RowCall {
  loop: (typeof ROW_CALL_LOOPS)[number];
  args: number[];
  strides: number[];
  countArg: number;
  partialArgs: number;
  chunkRows?: number;
}

const MAX_ROW_CALL_ARGS = 9;

/**
 * A row call's fields for rows [r0, r1): loop, r0, r1, partialAt, totalAt, sums, countArg, partialArgs, 9 args,
 * 9 strides, chunkRows.
 */
function rowCallFields(call: RowCall, r0: number, r1: number, partialAt: number, totalAt: number, sums: number): number[] {
  if (call.args.length > MAX_ROW_CALL_ARGS || call.strides.length !== call.args.length) {
    throw new Error(`row call ${call.loop}: up to ${MAX_ROW_CALL_ARGS} arguments, each with a stride`);
  }
  const pad = (xs: number[]) => [...xs, ...new Array<number>(MAX_ROW_CALL_ARGS - xs.length).fill(0)];
  const loop = ROW_CALL_LOOPS.indexOf(call.loop);
  return [
    loop,
    r0,
    r1,
    partialAt,
    totalAt,
    sums,
    call.countArg,
    call.partialArgs,
    ...pad(call.args),
    ...pad(call.strides),
    call.chunkRows ?? 512,
  ];
}

/**
 * Runs a row call's rows [r0, r1) (fields as rowCallFields makes them) in chunks of chunkRows rows, moving the
 * float32 partial sums into the float64 totals after each, so long sums keep float32's rounding small.
 * Self-contained but for rowCallLoops: helper.ts runs this function's source text in its thread, and defines that
 * list there.
 */
export function runRowCall(loops: SimdLoops, buffer: ArrayBufferLike, fields: ArrayLike<number>): void {
  const f = Array.from(fields);
  const [loop, r0, r1, partialAt, totalAt, sums, countArg, partialArgs] = f;
  const args = f.slice(8, 17);
  const strides = f.slice(17, 26);
  const chunkRows = f[26];
  const run = loops[rowCallLoops[loop]] as (...a: number[]) => void;
  const partial = new Float32Array(buffer, partialAt, sums);
  const total = new Float64Array(buffer, totalAt, sums);
  total.fill(0);
  // A loop without a count argument takes one row (unit) a call.
  const step = countArg < 0 ? 1 : chunkRows;
  for (let r = r0; r < r1; r += step) {
    const count = Math.min(step, r1 - r);
    partial.fill(0);
    run(...args.map((a, i) => (i === countArg ? count : (partialArgs >> i) & 1 ? partialAt + a : a + r * strides[i])));
    for (let k = 0; k < sums; k++) total[k] += partial[k];
  }
}

/** Below this many values a row call stays on one thread: waking the helper costs about as much as it saves. */
const MIN_SPLIT_VALUES = 1 << 17;

/**
 * A row call over `rows` rows of `values` values in all, on this thread and, for large calls with a helper, half
 * on it; returns the float64 totals of its `sums` partial sums. scratch(thread) gives each thread's partial-sum
 * and total addresses (the totals 8-byte aligned).
 */
export function runRowCallJob(
  loops: SimdLoops,
  memory: () => ArrayBufferLike,
  call: RowCall,
  rows: number,
  values: number,
  sums: number,
  scratch: (thread: 0 | 1) => { partialAt: number; totalAt: number },
): Float64Array {
  const split = Math.floor(rows / 2);
  const [mine, theirs] = [scratch(0), scratch(1)];
  const fields = (r0: number, r1: number, at: typeof mine) => rowCallFields(call, r0, r1, at.partialAt, at.totalAt, sums);
  const halves: [number[], number[]] | undefined =
    rows >= 2 && values >= MIN_SPLIT_VALUES ? [fields(0, split, mine), fields(split, rows, theirs)] : undefined;
  const helped = splitWithHelper(ROW_CALL_JOB, (f) => runRowCall(loops, memory(), f), fields(0, rows, mine), halves);
  return addTotals(memory(), sums, mine.totalAt, helped ? theirs.totalAt : undefined);
}
