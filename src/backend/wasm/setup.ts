/**
 * Starts the tfjs wasm backend with the training kernels registered.
 *
 * The wasm package picks its SIMD single-threaded build in Node: its threaded build starts workers
 * from a `blob:` URL, which Node's worker_threads cannot load (see the report in src/backend/select.ts).
 */
import * as tf from '@tensorflow/tfjs';
import * as wasmBackend from '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from './kernels';

export interface WasmStart {
  threads: number;
  kernels: string[];
}

/** Registers our kernels, then makes 'wasm' the active backend. Throws with the loader's reason on failure. */
export async function startWasmBackend(): Promise<WasmStart> {
  const kernels = registerWasmTrainingKernels();
  const ok = await tf.setBackend('wasm');
  if (!ok) throw new Error('tf.setBackend("wasm") returned false (the wasm binary failed to initialise)');
  await tf.ready();
  return { threads: wasmBackend.getThreadsCount(), kernels };
}
