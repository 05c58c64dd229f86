/** What the kernel adapters share: the argument types and reading/writing the CPU backend's float32 storage. */
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { NATIVE_BACKEND } from './backend';

export type Backend = MathBackendCPU;
export type Info = tf.TensorInfo;
export type Attrs = Record<string, unknown>;
export type KernelArgs = { inputs: Record<string, Info>; backend: Backend; attrs?: Attrs };
/** An adapter: the addon's result, or fallback() (the CPU kernel it replaces, on the same arguments) for inputs it does not take. */
export type NativeKernel = (args: KernelArgs, fallback: () => Info) => Info | Info[] | undefined;

/** A float32 tensor's storage; a few CPU kernels (casts) leave other typed arrays, copied here. */
export function values(backend: Backend, t: Info): Float32Array {
  const v = backend.data.get(t.dataId).values;
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}

export function allFloat32(...ts: Array<Info | undefined>): boolean {
  return ts.every((t) => t === undefined || t.dtype === 'float32');
}

export function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function output(backend: Backend, shape: number[], data: Float32Array): Info {
  return backend.makeTensorInfo(shape, 'float32', data);
}

/** Registers a kernel that exists only on the native backend (its callers check that they may use it). */
export function registerNativeOnly(kernelName: string, kernel: NativeKernel): void {
  tf.registerKernel({
    kernelName,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args) =>
      kernel(args as unknown as KernelArgs, () => {
        throw new Error(`${kernelName} has no CPU fallback`);
      }) as tf.TensorInfo | tf.TensorInfo[],
  });
}
