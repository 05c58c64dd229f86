/**
 * ReLU's mask, applied by the layer after a conv + bias + ReLU layer instead of by the layer itself.
 *
 * A fused conv layer's gradient (conv-layers.ts) starts with a pass over its output: masked = dy * step(y) and the
 * bias's gradient, the mask's per-channel sums. When the next layer is a max pooling or a training batch-norm, that
 * layer's own gradient already makes one pass over the same tensor and can apply the mask and take the sums in it
 * (MAX_POOL_GRAD_RELU, BATCH_NORM_TRAIN_GRAD_RELU): one activation-sized pass less per such pair and step.
 *
 * What makes that safe: the masked gradient must reach only the conv layer's gradient. It would be wrong as the
 * gradient of y itself, which a tf.grads(f, [y]) could ask for, but y is then among the xs given before f ran.
 * So the consumer masks only when y was made in the forward pass it is running in (the same tfjs 'forward' scope
 * of engine.gradients, tfjs 4.22), where y cannot be one of that call's xs. Where the premasked gradient is added to
 * another before it reaches the conv layer, the sum is a new tensor the conv layer masks again (the same values:
 * the mask is 0 or 1). tests/accel-relu-mask.test.ts compares gradients with tfjs's and checks these cases.
 */
import * as tf from '@tensorflow/tfjs';

type DataId = object;

interface EngineState {
  gradientDepth: number;
  scopeStack: Array<{ name: string }>;
}

/** The scope of the innermost engine.gradients forward pass running now, or undefined outside any. */
function forwardScope(): object | undefined {
  const state = (tf.engine() as unknown as { state: EngineState }).state;
  if (!(state.gradientDepth > 0) || !Array.isArray(state.scopeStack)) return undefined;
  for (let i = state.scopeStack.length - 1; i >= 0; i--) {
    if (state.scopeStack[i].name === 'forward') return state.scopeStack[i];
  }
  return undefined;
}

/** Outputs of fused conv + bias + ReLU layers (by dataId) and the forward pass they were made in. */
const reluOutputs = new WeakMap<DataId, object>();

/** Gradients (by dataId) already multiplied by step(y), with y's dataId and shape and their per-channel sums. */
const premasked = new WeakMap<DataId, { y: DataId; shape: number[]; sums: tf.Tensor }>();

/** Records y as a conv + bias + ReLU layer's output (conv-layers.ts calls it). */
export function noteReluOutput(y: tf.Tensor): void {
  const scope = forwardScope();
  if (scope) reluOutputs.set(y.dataId, scope);
}

/** Whether x is a conv + bias + ReLU output made in the forward pass running now: its consumer may mask for it. */
export function followsReluInThisPass(x: tf.Tensor): boolean {
  const scope = reluOutputs.get(x.dataId);
  return scope !== undefined && scope === forwardScope();
}

/** Records dx as the gradient of ReLU output y already multiplied by step(y), with its per-channel sums. */
export function notePremasked(dx: tf.Tensor, y: tf.Tensor, sums: tf.Tensor): void {
  premasked.set(dx.dataId, { y: y.dataId, shape: y.shape, sums });
}

/**
 * The per-channel sums of dy when it is y's gradient already masked by step(y); undefined when it is not. Same data
 * and same shape (a reshape shares its input's dataId), so the masked channels are y's.
 */
export function premaskedSums(dy: tf.Tensor, y: tf.Tensor): tf.Tensor | undefined {
  const entry = premasked.get(dy.dataId);
  if (!entry || entry.y !== y.dataId || entry.sums.isDisposed) return undefined;
  return tf.util.arraysEqual(entry.shape, y.shape) && tf.util.arraysEqual(dy.shape, y.shape) ? entry.sums : undefined;
}
