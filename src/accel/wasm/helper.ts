/**
 * A second thread for our SIMD loops (Node only; setup.ts starts it with the threaded wasm backend). The loops of
 * kernels.ts run synchronously inside a kernel call, so the main thread hands the helper half of a job's rows
 * through a shared control block, runs its own half, and waits (Atomics) for the helper: no event loop involved.
 * The helper instantiates the same SIMD module on the backend's shared memory and runs row-jobs.ts's
 * filterGradRows or runRowCall, whose sources it is given as text.
 */
import { Worker } from 'node:worker_threads';
import { FILTER_GRAD_JOB, JOB_FIELDS, ROW_CALL_LOOPS, filterGradRows, runRowCall, type RowSplitter } from './row-jobs';
import { simdModuleBytes } from './simd';

// The control block: [state, ready, kind, ...job fields]. state: 0 idle, 1 job posted, 2 done, 3 failed; ready:
// 0 starting, 1 ready, 2 could not compile the loops; kind: FILTER_GRAD_JOB or ROW_CALL_JOB.
const STATE = 0;
const READY = 1;
const KIND = 2;
const JOB = 3;
const MAX_FIELDS = 32;
const START_TIMEOUT_MS = 10_000;
const JOB_TIMEOUT_MS = 120_000;

function workerSource(): string {
  return `
const { workerData } = require('node:worker_threads');
const filterGradRows = ${filterGradRows.toString()};
const rowCallLoops = ${JSON.stringify(ROW_CALL_LOOPS)};
const runRowCall = ${runRowCall.toString()};
const { memory, control, bytes } = workerData;
const ctl = new Int32Array(control);
let loops;
try {
  loops = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports;
  Atomics.store(ctl, ${READY}, 1);
} catch {
  Atomics.store(ctl, ${READY}, 2);
}
Atomics.notify(ctl, ${READY});
for (;;) {
  const state = Atomics.load(ctl, ${STATE});
  if (state !== 1) {
    Atomics.wait(ctl, ${STATE}, state);
    continue;
  }
  try {
    if (Atomics.load(ctl, ${KIND}) === ${FILTER_GRAD_JOB}) filterGradRows(loops, memory.buffer, ctl.subarray(${JOB}, ${JOB + JOB_FIELDS.length}));
    else runRowCall(loops, memory.buffer, ctl.subarray(${JOB}, ${JOB + MAX_FIELDS}));
    Atomics.store(ctl, ${STATE}, 2);
  } catch {
    Atomics.store(ctl, ${STATE}, 3);
  }
  Atomics.notify(ctl, ${STATE});
}
`;
}

/** Starts the helper on `memory` (the threaded backend's shared memory); the reason it could not, as a string. */
export function startHelperThread(memory: WebAssembly.Memory): RowSplitter | string {
  if (!(memory.buffer instanceof SharedArrayBuffer)) return 'the wasm memory is not shared';
  const control = new SharedArrayBuffer(4 * (JOB + MAX_FIELDS));
  const ctl = new Int32Array(control);
  let worker: Worker;
  try {
    worker = new Worker(workerSource(), { eval: true, workerData: { memory, control, bytes: simdModuleBytes(true) } });
  } catch (err) {
    return `could not start a worker thread (${(err as Error).message})`;
  }
  worker.unref(); // it serves kernels only; it must not keep the process alive
  worker.on('error', () => undefined); // a failure shows in the control block; nothing to throw into
  Atomics.wait(ctl, READY, 0, START_TIMEOUT_MS);
  const ready = Atomics.load(ctl, READY);
  if (ready !== 1) {
    void worker.terminate();
    return ready === 2
      ? 'the helper thread could not compile the SIMD loops'
      : `the helper thread did not start in ${START_TIMEOUT_MS / 1000} s`;
  }
  return {
    start(kind: number, fields: number[]): boolean {
      if (fields.length > MAX_FIELDS) return false;
      ctl.set(fields, JOB);
      Atomics.store(ctl, KIND, kind);
      Atomics.store(ctl, STATE, 1);
      Atomics.notify(ctl, STATE);
      return true;
    },
    finish(): void {
      const deadline = Date.now() + JOB_TIMEOUT_MS;
      while (Atomics.load(ctl, STATE) === 1 && Date.now() < deadline) Atomics.wait(ctl, STATE, 1, deadline - Date.now());
      const state = Atomics.load(ctl, STATE);
      Atomics.store(ctl, STATE, 0);
      if (state !== 2) {
        throw new Error(
          `the wasm helper thread ${state === 1 ? `did not finish a job in ${JOB_TIMEOUT_MS / 1000} s` : 'failed on a job'}; PNEUMO_WASM_THREADS=1 runs without it`,
        );
      }
    },
  };
}
