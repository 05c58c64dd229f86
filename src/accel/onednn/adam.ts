/** The native backend's kernel for the fused Adam update (../fused/adam.ts): one threaded pass per variable. */
import type { NativeAddon } from './addon';
import { uninitialised } from './buffers';
import { type NativeKernel, output, registerNativeOnly, size, values } from './common';
import { FUSED_ADAM, installBackendFusedAdam } from '../fused/adam';

function adamKernel(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { value, gradient, m, v } = inputs;
    const n = size(value.shape);
    const [w2, m2, v2] = [uninitialised(n), uninitialised(n), uninitialised(n)];
    a.adam(
      values(backend, value),
      values(backend, gradient),
      values(backend, m),
      values(backend, v),
      Float64Array.from(attrs!.params as number[]),
      w2,
      m2,
      v2,
    );
    return [w2, m2, v2].map((d) => output(backend, [...value.shape], d));
  };
}

/** The native backend's part: the addon's Adam kernel, and the fused update (../fused/adam.ts) where a backend has one. */
export function registerFusedAdam(a: NativeAddon): void {
  registerNativeOnly(FUSED_ADAM, adamKernel(a));
  installBackendFusedAdam();
}
