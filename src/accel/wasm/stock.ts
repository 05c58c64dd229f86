/**
 * Stock wasm kernels that we replace but still delegate to for cases we do not handle. An unregistered
 * kernel gets no setup from the backend, so its setup (a cwrap) runs lazily, once per backend instance.
 */
import type { KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './heap';

export interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  backend: WasmBackend;
  attrs: NamedAttrMap;
}

const stockKernels = new Map<string, KernelConfig>();
const stockSetUp = new WeakMap<object, Set<string>>();

export function rememberStock(name: string, config: KernelConfig): void {
  stockKernels.set(name, config);
}

export function callStock(name: string, args: KernelArgs): TensorInfo {
  const config = stockKernels.get(name);
  if (!config) throw new Error(`stock wasm kernel '${name}' unavailable`);
  let done = stockSetUp.get(args.backend);
  if (!done) {
    done = new Set();
    stockSetUp.set(args.backend, done);
  }
  if (!done.has(name)) {
    config.setupFunc?.(args.backend as never);
    done.add(name);
  }
  return config.kernelFunc(args as never) as TensorInfo;
}
