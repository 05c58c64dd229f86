/**
 * The row loop of the stride-1 filter gradients (kernels.ts), split across two threads where a helper thread runs
 * (helper.ts, started by setup.ts in Node). Its SIMD loops ran on the main thread alone while XNNPACK's pool sat
 * idle: block 1's 16 -> 16 filter gradient was the largest kernel of a wasm training step.
 * This module imports nothing from Node, so kernels.ts (and with it the web page's bundle) stays free of it.
 */
import type { SimdLoops } from './simd';

/**
 * What one call of filterGradRows needs, in this order (the helper thread reads it from a shared Int32Array):
 * loop 0 = convgrad(a = ciBytes, b = coBytes, c = table rows), loop 1 = dwgrad(a = cBytes, b = taps); byte
 * addresses on the wasm heap of the input grid, dy, the loop's int32 table, the thread's float32 partial sums and
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
    else loops.dwgrad(xRow, dyRow, accAt, outWidth, a, tableAt, b);
    pending += outWidth;
    if (pending >= 256 || r === r1 - 1) {
      for (let k = 0; k < sums; k++) total[k] += partial[k];
      partial.fill(0);
      pending = 0;
    }
  }
}

/** A second thread for a job's rows [split, r1), while the calling thread runs [r0, split). */
export interface RowSplitter {
  /** Posts those rows, with the second thread's own partial sums and totals at accAt / totalAt; false: declined. */
  start(job: FilterGradJob, split: number, accAt: number, totalAt: number): boolean;
  /** Waits until the second thread has written its totals; throws if it failed (runFilterGradJob then does its rows). */
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
  const helped = second !== undefined && splitter !== undefined && rows >= 2 && work >= MIN_SPLIT_WORK;
  const started = helped && splitter!.start(job, split, second.accAt, second.totalAt);
  const mine = started ? { ...job, r1: split } : job;
  filterGradRows(
    loops,
    memory(),
    JOB_FIELDS.map((f) => mine[f]),
  );
  if (started) {
    try {
      splitter!.finish();
    } catch (err) {
      // Training goes on without the helper: its rows are done here, and the next jobs stay on this thread.
      console.warn(`wasm: ${(err as Error).message}; continuing on one thread`);
      splitter = undefined;
      const theirs = { ...job, r0: split, accAt: second!.accAt, totalAt: second!.totalAt };
      filterGradRows(
        loops,
        memory(),
        JOB_FIELDS.map((f) => theirs[f]),
      );
    }
  }
  const totals = new Float64Array(new Float64Array(memory(), job.totalAt, job.sums));
  if (started) {
    const theirs = new Float64Array(memory(), second.totalAt, job.sums);
    for (let k = 0; k < job.sums; k++) totals[k] += theirs[k];
  }
  return totals;
}
