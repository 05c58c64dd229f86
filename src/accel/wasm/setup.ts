/**
 * Starts the tfjs wasm backend with our training kernels, multi-threaded where possible.
 *
 * Why the package's own loader runs single-threaded in Node, and what this module does instead:
 * 1. tfjs-backend-wasm reports WASM_HAS_MULTITHREAD_SUPPORT=false whenever IS_NODE, so it always picks
 *    the single-threaded SIMD binary.
 * 2. Forcing the flag does not help: the loader hands Emscripten its worker script and main script as
 *    `blob:` URLs, which Node's worker_threads cannot load.
 * 3. Even with workers started, the C++ side computes `num_cores = emscripten_num_logical_cores() / 2`
 *    (it assumes hyper-threading) and caps the XNNPACK thread pool at it: on a 2-core machine that is
 *    1 thread, which is why getThreadsCount() stayed 1.
 * So we build the threaded Emscripten module ourselves: the worker script goes to a temp file, the main
 * script is the package's own file path, and while the module initialises `os.cpus()` reports each core
 * twice so that the halving yields the real core count. The result is wrapped in the package's
 * BackendWasm and registered as 'wasm', so every wasm kernel (stock and ours) runs on it. Measured on
 * 2 cores: 3x3 conv 32x150x150x16 106 ms -> 62 ms wall, 1024^2 matmul 49 -> 27 ms.
 * If anything in that path fails we fall back to the package's single-threaded loader.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as tf from '@tensorflow/tfjs';
import * as wasmPackage from '@tensorflow/tfjs-backend-wasm';
import { registerWasmTrainingKernels } from './kernels';
import { startHelperThread } from './helper';
import { hasRelaxedSimd } from './simd';
import { useRowSplitter } from './row-jobs';

export interface WasmStart {
  threads: number;
  kernels: string[];
  /** Why the threaded build is not in use, when it is not. */
  singleThreadReason?: string;
  /** Whether our SIMD filter-gradient loops share their rows with a helper thread (helper.ts), or why not. */
  helperThread: true | string;
  /** Whether the filter-gradient and Winograd loops use relaxed SIMD's fused multiply-add (allowRelaxedSimd). */
  fusedMultiplyAdd: boolean;
}

export interface WasmStartOptions {
  /** Thread-pool size; default PNEUMO_WASM_THREADS or the number of cores (the C++ side caps at 8). */
  threads?: number;
}

const WASM_PRIORITY = 2;

function wasmOutDir(): string {
  // The package's main entry is dist/tf-backend-wasm.node.js; the Emscripten outputs sit in wasm-out/.
  return path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '..', 'wasm-out');
}

function writeWorkerScript(dir: string): string {
  const { wasmWorkerContents } = require(path.join(dir, 'tfjs-backend-wasm-threaded-simd.worker.js')) as {
    wasmWorkerContents: string;
  };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-tfjs-wasm-'));
  const file = path.join(tmp, 'tfjs-backend-wasm-threaded-simd.worker.js');
  // The contents were a template literal: its "\n" escapes became newlines inside string literals.
  fs.writeFileSync(file, wasmWorkerContents.replace(/\n/g, '\\n'));
  process.once('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  return file;
}

type NodeWorker = { unref?: () => void };

type EmscriptenModule = {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
  tfjs?: unknown;
  PThread?: { unusedWorkers?: NodeWorker[]; runningWorkers?: NodeWorker[] };
  sharedMemory?: WebAssembly.Memory;
};

/** Pool workers must not keep the process alive: they only serve the main thread's kernels. */
function unrefWorkers(module: EmscriptenModule): void {
  for (const w of [...(module.PThread?.unusedWorkers ?? []), ...(module.PThread?.runningWorkers ?? [])]) w.unref?.();
}

/** Instantiates the threaded SIMD module in Node, with the core count the C++ side needs to see. */
async function instantiateThreaded(): Promise<EmscriptenModule> {
  const dir = wasmOutDir();
  const workerFile = writeWorkerScript(dir);
  const mainScript = path.join(dir, 'tfjs-backend-wasm-threaded-simd.js');
  const factory = require(mainScript) as (config: object) => Promise<EmscriptenModule>;
  // The module's own require('os') is Node's cached module object, so patching it reaches the module.
  const nodeOs = require('os') as typeof os;
  const realCpus = nodeOs.cpus;
  nodeOs.cpus = () => {
    const cpus = realCpus.call(nodeOs);
    return [...cpus, ...cpus];
  };
  // Created here (as the module would: 16 MiB initial, 4 GiB max, shared) so that heap views can always
  // use the current buffer, even after a worker thread grew the memory.
  const wasmMemory = new WebAssembly.Memory({ initial: 256, maximum: 65536, shared: true });
  try {
    const module = await factory({
      locateFile: (file: string) => (file.endsWith('.worker.js') ? workerFile : path.join(dir, file)),
      mainScriptUrlOrBlob: mainScript,
      wasmMemory,
    });
    module.sharedMemory = wasmMemory;
    return module;
  } finally {
    nodeOs.cpus = realCpus;
  }
}

/** The same `tfjs` API object the package attaches to its module (backend_wasm.js init()). */
function attachTfjsApi(module: EmscriptenModule): void {
  module.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
}

type BackendFactory = () => tf.KernelBackend | Promise<tf.KernelBackend>;

function registeredFactory(): { factory: BackendFactory; priority: number } | undefined {
  const registry = (tf.engine() as unknown as { registryFactory: Record<string, { factory: BackendFactory; priority: number }> })
    .registryFactory;
  return registry.wasm;
}

function requestedThreads(opts: WasmStartOptions): number {
  const fromEnv = Number(process.env.PNEUMO_WASM_THREADS);
  if (opts.threads !== undefined) return opts.threads;
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return os.cpus().length;
}

async function activate(): Promise<string | undefined> {
  try {
    return (await tf.setBackend('wasm')) ? undefined : 'tf.setBackend("wasm") returned false';
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

let started: WasmStart | undefined;

/**
 * Node 20's V8 compiles relaxed SIMD only behind --experimental-wasm-relaxed-simd (on by default from V8 11.4,
 * Node 22). Our filter-gradient loop took about a quarter less time with its fused multiply-add, so the flag is
 * turned on here, before our SIMD module is compiled; the flag only admits the relaxed opcodes in modules compiled
 * afterwards. PNEUMO_WASM_FMA=0 leaves it off.
 */
function allowRelaxedSimd(): boolean {
  if (process.env.PNEUMO_WASM_FMA === '0') return false;
  if (!hasRelaxedSimd()) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return hasRelaxedSimd();
}

/** With more than one thread, the helper that takes half of our SIMD loops' rows (XNNPACK's pool is idle then). */
function startRowHelper(threads: number): true | string {
  useRowSplitter(undefined);
  if (threads < 2) return 'one thread';
  const memory = (tf.backend() as unknown as { wasm: { sharedMemory?: WebAssembly.Memory } }).wasm.sharedMemory;
  if (!memory) return 'the wasm memory is not shared';
  const helper = startHelperThread(memory);
  if (typeof helper === 'string') return helper;
  useRowSplitter(helper);
  return true;
}

/**
 * Registers our kernels and makes 'wasm' the active backend, multi-threaded when more than one thread is
 * requested and the threaded module starts. Idempotent. Throws with the loader's reason on failure.
 */
export async function startWasmBackend(opts: WasmStartOptions = {}): Promise<WasmStart> {
  if (started && tf.findBackend('wasm')) {
    const why = await activate();
    if (why) throw new Error(why);
    return started;
  }
  const fusedMultiplyAdd = allowRelaxedSimd();
  const kernels = registerWasmTrainingKernels();
  const threads = requestedThreads(opts);
  let singleThreadReason: string | undefined = threads > 1 ? undefined : `${threads} thread requested`;

  // Swapping the loader would dispose a wasm backend someone already started, with its tensors: keep it.
  const alreadyRunning = (tf.engine() as unknown as { registry: Record<string, unknown> }).registry.wasm != null;
  if (threads > 1 && alreadyRunning) {
    singleThreadReason = "a wasm backend was already running (tf.setBackend('wasm') before initBackend()?)";
  }

  if (threads > 1 && !alreadyRunning) {
    const stock = registeredFactory();
    tf.removeBackend('wasm');
    tf.registerBackend(
      'wasm',
      async () => {
        const module = await instantiateThreaded();
        attachTfjsApi(module);
        wasmPackage.setThreadsCount(threads);
        const backend = new wasmPackage.BackendWasm(module as never); // starts the thread pool
        unrefWorkers(module);
        return backend;
      },
      WASM_PRIORITY,
    );
    const why = await activate();
    if (why) {
      singleThreadReason = `threaded wasm failed to start: ${why.split('\n')[0]}`;
      tf.removeBackend('wasm');
      if (stock) tf.registerBackend('wasm', stock.factory, stock.priority);
    }
  }
  if (singleThreadReason) {
    const why = await activate();
    if (why) throw new Error(why);
  }
  await tf.ready();
  const actual = wasmPackage.getThreadsCount();
  if (actual > 1)
    singleThreadReason = undefined; // e.g. the running backend is our threaded one
  else if (!singleThreadReason) singleThreadReason = 'thread pool reported 1 thread';
  started = { threads: actual, kernels, singleThreadReason, helperThread: startRowHelper(actual), fusedMultiplyAdd };
  return started;
}
