/**
 * Compute acceleration: how tfjs runs here. The rest of src/ imports this part only through this file and two
 * narrow entry points that must stay free of what this one loads:
 * - `./jpeg`: the optional libjpeg-turbo decoder (accel/jpeg), for src/data/decode.ts (no tfjs needed);
 * - `./browser`: the kernels the web page registers on the browser's wasm backend (no Node modules).
 *
 * Inside: `select.ts` picks the backend (tfjs-node-gpu, tfjs-node, our oneDNN `native`, wasm with our training
 * kernels, cpu); `onednn/` is the oneDNN backend (C++ in accel/onednn); `wasm/` the wasm training kernels.
 * See accel/README.md.
 */
export {
  BACKEND_ORDER,
  backendInfo,
  describeBackend,
  describeConvChoices,
  initBackend,
  nativeVectorLanes,
  type BackendInfo,
  type BackendName,
  type InitBackendOptions,
} from './select';
export { cpuDescription, describeCpu, formatCpu, type CpuDescription } from './cpu';
