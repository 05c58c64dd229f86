/**
 * Gradients that tfjs computes as chains of activation-sized ops, replaced by one kernel on every backend that
 * registers it (`native`: onednn/gradients.ts; `wasm`: wasm/fused.ts). tfjs's gradient registry is global, so on
 * any other backend, or for inputs the fused kernel does not take, tfjs's own gradient runs unchanged.
 */
import * as tf from '@tensorflow/tfjs';

/** ReLU's gradient in one pass: inputs dy and x (ReLU's input), output dy * step(x) with the cpu backend's Step. */
export const FUSED_RELU_GRAD = 'FusedReluGrad';

type GradFunc = tf.GradConfig['gradFunc'];

/** Whether the active backend registered `kernel`. */
export function activeBackendHas(kernel: string): boolean {
  return tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

/** Whether tfjs records the ops that run now for a gradient (inside tf.grad, variableGrads, minimize, fit's step). */
export function recordingGradients(): boolean {
  return (tf.engine() as unknown as { state: { gradientDepth: number } }).state.gradientDepth > 0;
}

/** Registers make(tfjs's gradient) as `kernel`'s gradient, in its place; nothing where tfjs has none. */
export function replaceGradient(kernel: string, make: (original: GradFunc) => GradFunc): void {
  const original = tf.getGradient(kernel);
  if (!original) return;
  tf.registerGradient({ ...original, gradFunc: make((dy, saved, attrs) => original.gradFunc(dy, saved, attrs)) });
}

let reluInstalled = false;

/** ReLU's gradient through FUSED_RELU_GRAD where the active backend has it (idempotent). */
export function installFusedReluGradient(): void {
  if (reluInstalled) return;
  reluInstalled = true;
  replaceGradient(tf.Relu, (original) => (dy, saved, attrs) => {
    const dyT = dy as tf.Tensor;
    const [x] = saved;
    const fused = activeBackendHas(FUSED_RELU_GRAD) && dyT.dtype === 'float32' && x.dtype === 'float32' && dyT.size === x.size;
    if (!fused) return original(dy, saved, attrs);
    return { x: () => tf.engine().runKernel(FUSED_RELU_GRAD, { dy: dyT, x }) as tf.Tensor };
  });
}
