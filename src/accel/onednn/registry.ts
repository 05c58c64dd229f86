/** Registering the `native` backend's kernels: the CPU backend's, with the addon's adapters in front of some. */
import * as tf from '@tensorflow/tfjs';
import { loadNativeAddon, type NativeAddon } from './addon';
import { NATIVE_BACKEND } from './backend';
import { type Info, type KernelArgs } from './common';
import { nativeKernels } from './kernels';

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

/** Registers every CPU kernel for `native`, the addon's adapters in front of those it accelerates. */
export function registerKernels(a: NativeAddon): void {
  const overrides = nativeKernels(a);
  for (const config of tf.getKernelsForBackend('cpu')) {
    const cpu = overrides[config.kernelName] ? countingFallback(config.kernelName, config.kernelFunc) : config.kernelFunc;
    const native = overrides[config.kernelName];
    const kernelFunc: tf.KernelFunc = native
      ? (args) => {
          try {
            return native(args as unknown as KernelArgs, () => cpu(args) as Info) as tf.TensorInfo;
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
