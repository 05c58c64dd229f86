/**
 * Picks the fastest tfjs backend that actually works on this machine, once per process.
 *
 * Order: tfjs-node-gpu (only when it loads AND a GPU is present), tfjs-node, native (our optional
 * oneDNN addon, src/accel/onednn/), wasm (with our training kernels), cpu (pure JS, slow).
 * PNEUMO_BACKEND=<name> or initBackend({ prefer }) forces one; a forced backend that cannot load is an
 * error that says why and lists what would work.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'tfjs-node-gpu' | 'tfjs-node' | 'native' | 'wasm' | 'cpu';

export const BACKEND_ORDER: readonly BackendName[] = ['tfjs-node-gpu', 'tfjs-node', 'native', 'wasm', 'cpu'];

export interface BackendInfo {
  name: BackendName;
  threads: number;
  skipped: Array<{ name: BackendName; why: string }>;
  note?: string;
}

export interface InitBackendOptions {
  prefer?: BackendName;
  quiet?: boolean;
}

type Attempt = { ok: true; threads: number; note?: string } | { ok: false; why: string };

/** The project root: the nearest folder above this file whose package.json is ours. */
function projectRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'pneumonia-xray') return dir;
      } catch {
        // unreadable package.json: keep walking up
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0].slice(0, 200);
}

/**
 * Loads the real @tensorflow/tfjs-node(-gpu) from the project root. danfojs-node carries a shim with the
 * same require name that merely re-exports @tensorflow/tfjs; it must never count as tfjs-node.
 */
function loadTfjsNode(pkgName: '@tensorflow/tfjs-node' | '@tensorflow/tfjs-node-gpu'): Attempt {
  let pkgJsonPath: string;
  try {
    pkgJsonPath = require.resolve(`${pkgName}/package.json`, { paths: [projectRoot()] });
  } catch {
    return { ok: false, why: 'not installed' };
  }
  const pkg = JSON.parse(fs.readFileSync(pkgJsonPath, 'utf8')) as { name?: string; version?: string };
  if (pkg.name !== pkgName) {
    return { ok: false, why: `${path.dirname(pkgJsonPath)} is '${pkg.name}', not the real ${pkgName}` };
  }
  try {
    // Loading the package loads its native binding (libtensorflow); a missing library throws here.
    require(path.dirname(pkgJsonPath));
  } catch (err) {
    return { ok: false, why: `installed (${pkg.version}) but its native binding failed to load: ${firstLine(err)}` };
  }
  if (tf.findBackend('tensorflow') == null) {
    return { ok: false, why: `loaded ${pkg.version} but it registered no 'tensorflow' backend (a second copy of tfjs-core?)` };
  }
  return { ok: true, threads: os.cpus().length, note: `${pkgName}@${pkg.version}` };
}

function gpuPresent(): boolean {
  return fs.existsSync('/dev/nvidia0') || fs.existsSync('/proc/driver/nvidia/gpus');
}

async function activate(name: string): Promise<string | undefined> {
  try {
    const ok = await tf.setBackend(name);
    return ok ? undefined : `tf.setBackend('${name}') returned false`;
  } catch (err) {
    return firstLine(err);
  }
}

interface NativeModule {
  describeConvChoices(detail: 'timings' | 'brief'): string | undefined;
  keepNativeConvChoices(): string | undefined;
  nativeVectorLanes(): number | undefined;
  tryRegisterNative(): { ok: true; threads: number } | { ok: false; why: string };
}

async function tryBackend(name: BackendName): Promise<Attempt> {
  switch (name) {
    case 'tfjs-node-gpu': {
      if (!gpuPresent()) {
        let installed = true;
        try {
          require.resolve('@tensorflow/tfjs-node-gpu/package.json', { paths: [projectRoot()] });
        } catch {
          installed = false;
        }
        return { ok: false, why: installed ? 'no GPU found' : 'not installed' };
      }
      const loaded = loadTfjsNode('@tensorflow/tfjs-node-gpu');
      if (!loaded.ok) return loaded;
      const why = await activate('tensorflow');
      return why ? { ok: false, why } : loaded;
    }
    case 'tfjs-node': {
      const loaded = loadTfjsNode('@tensorflow/tfjs-node');
      if (!loaded.ok) return loaded;
      const why = await activate('tensorflow');
      return why ? { ok: false, why } : loaded;
    }
    case 'native': {
      let mod: NativeModule;
      try {
        mod = require('./onednn') as NativeModule;
      } catch (err) {
        const code = (err as { code?: string }).code;
        return { ok: false, why: code === 'MODULE_NOT_FOUND' ? 'not built' : `failed to load: ${firstLine(err)}` };
      }
      if (typeof mod.tryRegisterNative !== 'function') return { ok: false, why: 'module has no tryRegisterNative()' };
      let result: ReturnType<NativeModule['tryRegisterNative']>;
      try {
        result = mod.tryRegisterNative();
      } catch (err) {
        return { ok: false, why: firstLine(err) };
      }
      if (!result.ok) return { ok: false, why: result.why };
      const why = await activate('native');
      return why ? { ok: false, why } : { ok: true, threads: result.threads, note: mod.keepNativeConvChoices() };
    }
    case 'wasm': {
      try {
        // Lazy: loading the wasm package costs time and memory that other backends do not need.
        const { startWasmBackend } = await import('./wasm/setup');
        const started = await startWasmBackend();
        const helper = started.helperThread === true ? '' : `; no helper thread: ${started.helperThread}`;
        const threading = (started.singleThreadReason ? `; single-threaded: ${started.singleThreadReason}` : '') + helper;
        const fma = started.fusedMultiplyAdd ? ', relaxed-SIMD FMA' : '';
        return { ok: true, threads: started.threads, note: `training kernels: ${started.kernels.length}${fma}${threading}` };
      } catch (err) {
        return { ok: false, why: firstLine(err) };
      }
    }
    case 'cpu': {
      const why = await activate('cpu');
      return why ? { ok: false, why } : { ok: true, threads: 1, note: 'pure JavaScript: slow for training' };
    }
  }
}

function parseBackendName(value: string, source: string): BackendName {
  if ((BACKEND_ORDER as readonly string[]).includes(value)) return value as BackendName;
  throw new Error(`${source}='${value}' is not a backend; use one of: ${BACKEND_ORDER.join(', ')}.`);
}

/**
 * One line on the backend: its threads, notes, what was skipped and why, and, once `native`'s convolutions have
 * timed their algorithms (after the first training step), what they chose: a count per algorithm (`brief`, for
 * logs, notebooks and summary.md) or each choice with its timings (`timings`, config.json's record).
 */
export function describeBackend(info: BackendInfo, convDetail: 'brief' | 'timings' = 'brief'): string {
  const skipped = info.skipped.map((s) => `${s.name}: ${s.why}`).join('; ');
  const note = info.note ? ` [${info.note}]` : '';
  const conv = info.name === 'native' ? describeConvChoices(convDetail) : undefined;
  return `backend: ${info.name} (threads: ${info.threads})${note}${skipped ? ` — skipped ${skipped}` : ''}${conv ? ` — conv algorithms: ${conv}` : ''}`;
}

let current: BackendInfo | undefined;
let pending: Promise<BackendInfo> | undefined;

async function select(opts: InitBackendOptions): Promise<BackendInfo> {
  const fromEnv = process.env.PNEUMO_BACKEND?.trim();
  const forced = opts.prefer ?? (fromEnv ? parseBackendName(fromEnv, 'PNEUMO_BACKEND') : undefined);
  if (opts.prefer) parseBackendName(opts.prefer, 'prefer');
  const skipped: BackendInfo['skipped'] = [];

  if (forced) {
    const result = await tryBackend(forced);
    if (!result.ok) {
      const source = opts.prefer ? `initBackend({ prefer: '${forced}' })` : `PNEUMO_BACKEND=${forced}`;
      throw new Error(
        `Backend '${forced}' was requested (${source}) but cannot load: ${result.why}. ` +
          `Unset it to pick automatically, or choose another of: ${BACKEND_ORDER.filter((b) => b !== forced).join(', ')}.`,
      );
    }
    return { name: forced, threads: result.threads, skipped, note: result.note };
  }
  for (const name of BACKEND_ORDER) {
    const result = await tryBackend(name);
    if (result.ok) return { name, threads: result.threads, skipped, note: result.note };
    skipped.push({ name, why: result.why });
  }
  throw new Error(`No tfjs backend could start: ${skipped.map((s) => `${s.name}: ${s.why}`).join('; ')}`);
}

/** Selects and activates a backend; later calls return the first call's info. */
export async function initBackend(opts: InitBackendOptions = {}): Promise<BackendInfo> {
  if (current) return current;
  if (!pending) {
    pending = select(opts).then(
      (info) => {
        current = info;
        if (!opts.quiet) process.stderr.write(`${describeBackend(info)}\n`);
        return info;
      },
      (err: unknown) => {
        pending = undefined; // a failed forced choice may be retried with other options
        throw err;
      },
    );
  }
  return pending;
}

/** The backend chosen by initBackend, if it has run. */
export function backendInfo(): BackendInfo | undefined {
  return current;
}

/** What the `native` backend's convolutions timed and chose (onednn's describeConvChoices); undefined elsewhere. */
export function describeConvChoices(detail: 'timings' | 'brief' = 'timings'): string | undefined {
  if (current?.name !== 'native') return undefined;
  return (require('./onednn') as NativeModule).describeConvChoices(detail);
}

/** How many float lanes the `native` addon's own loops were built for; undefined on other backends. */
export function nativeVectorLanes(): number | undefined {
  if (current?.name !== 'native') return undefined;
  return (require('./onednn') as NativeModule).nativeVectorLanes();
}
