/**
 * Prediction with the layer before each max pooling run together with it, as one kernel, where the active backend
 * has that kernel (`native`): a Conv2D with bias and ReLU (CONV_BIAS_RELU_MAX_POOL) or an inference-mode batch-norm
 * (BATCH_NORM_MAX_POOL). The layer's own output, four times the pooling's, then never goes out to memory: block 1's
 * convolution writes 46 MB for a batch of 32 at 150x150 that its pooling reads back to keep 11.5 MB.
 *
 * tfjs-layers runs a model one layer at a time, and a layer's call cannot see the layer after it, so this replaces
 * LayersModel.predict (chain.ts), the way layer-patch.ts replaces a layer's call. It takes over a model whose layers form one
 * chain (every layer's one input is the layer before's output, and nothing else reads it), called outside any
 * gradient tape with one float32 tensor of the model's input shape that tfjs would predict as one batch, when at
 * least one pair can be fused. It runs the chain as tfjs's executor does, layer by layer in inference mode, with
 * those pairs as one kernel each. Anything else runs tfjs's method. tests/accel-inference.test.ts compares the
 * outputs with tfjs's method.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2dBiasReluArgs, conv2dRunsFused } from './conv-layers';
import { type BatchNormInternals, batchNormLayoutProblem } from './batchnorm';
import { activeBackendHas, recordingGradients } from './gradients';
import { type GraphLayer, chainOf, fitsModelInput, poolAttrs } from './chain';

/**
 * Inputs x, filter, bias; attrs strides, pad (the convolution's), poolSize, poolStrides, poolPad (the max
 * pooling's): maxPool(relu(conv2d(x, filter) + bias)), channels last, for inference only (no gradient).
 */
export const CONV_BIAS_RELU_MAX_POOL = 'Conv2DBiasReluMaxPool';
/**
 * Inputs x, mean, variance, and optionally offset and scale (one value per channel, channels last); attrs
 * varianceEpsilon, poolSize, poolStrides, poolPad: maxPool(batchNorm(x)), for inference only (no gradient).
 */
export const BATCH_NORM_MAX_POOL = 'BatchNormMaxPool';

/** Which kernel runs `layer` with the max pooling `next`, if any (their inputs, 4D float32, are checked apart). */
function pairKernel(layer: GraphLayer, next: GraphLayer | undefined): string | undefined {
  if (!next || !poolAttrs(next)) return undefined;
  if (layer.getClassName() === 'Conv2D' && conv2dRunsFused(layer)) return CONV_BIAS_RELU_MAX_POOL;
  if (layer.getClassName() !== 'BatchNormalization' || batchNormLayoutProblem(layer)) return undefined;
  const axis = (layer as unknown as BatchNormInternals).axis;
  return axis === -1 || axis === 3 ? BATCH_NORM_MAX_POOL : undefined;
}

/** `layer` and the max pooling `next` as pairKernel's kernel on x. */
function runPair(kernel: string, layer: GraphLayer, next: GraphLayer, x: tf.Tensor): tf.Tensor {
  const attrs = poolAttrs(next)!;
  if (kernel === CONV_BIAS_RELU_MAX_POOL) {
    const { filter, bias, strides, pad } = conv2dBiasReluArgs(layer);
    return tf.engine().runKernel(kernel, { x, filter, bias }, { strides, pad, ...attrs }) as tf.Tensor;
  }
  const bn = layer as unknown as BatchNormInternals;
  const inputs: Record<string, tf.Tensor> = { x, mean: bn.movingMean.read(), variance: bn.movingVariance.read() };
  if (bn.center && bn.beta) inputs.offset = bn.beta.read();
  if (bn.scale && bn.gamma) inputs.scale = bn.gamma.read();
  return tf.engine().runKernel(kernel, inputs, { varianceEpsilon: bn.epsilon, ...attrs }) as tf.Tensor;
}

/** Whether x is what tfjs's predict takes as the model's one input in one batch of `batchSize`. */
function oneBatchOfInput(model: tf.LayersModel, x: tf.Tensor, batchSize: number): boolean {
  return fitsModelInput(model, x) && x.shape[0] <= batchSize;
}

/**
 * The chain on x, layer by layer, each layer i with pairs[i] and the pooling after it as that kernel. Each layer's
 * output is disposed once the next layer has read it, as tfjs's executor does, so a large batch peaks at two layers'
 * activations rather than all of them.
 */
function predictChain(chain: GraphLayer[], pairs: Array<string | undefined>, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    let value = x;
    for (let i = 0; i < chain.length; i++) {
      const kernel = pairs[i];
      let next: tf.Tensor;
      if (kernel && value.rank === 4 && value.dtype === 'float32') {
        next = runPair(kernel, chain[i], chain[i + 1], value);
        i++;
      } else {
        next = chain[i].apply(value) as tf.Tensor;
      }
      // A layer may hand back its input (Dropout in inference): that one lives on as `next`.
      if (value !== x && next !== value) value.dispose();
      value = next;
    }
    return value;
  });
}

/** What predict's second argument may say (tfjs-layers' ModelPredictArgs; only batchSize matters here). */
type PredictArgs = { batchSize?: number };
type Predict = (this: tf.LayersModel, x: tf.Tensor | tf.Tensor[], args?: PredictArgs) => tf.Tensor | tf.Tensor[];

function fusedPredict(model: tf.LayersModel, input: tf.Tensor | tf.Tensor[], args: PredictArgs | undefined) {
  const x = Array.isArray(input) ? (input.length === 1 ? input[0] : undefined) : input;
  if (!x || recordingGradients() || !oneBatchOfInput(model, x, args?.batchSize ?? 32)) return undefined;
  const chain = chainOf(model);
  // Which kernels a backend has is known only now (the active one may change between calls).
  const pairs = chain?.map((layer, i) => {
    const kernel = pairKernel(layer, chain[i + 1]);
    return kernel && activeBackendHas(kernel) ? kernel : undefined;
  });
  return chain && pairs?.some(Boolean) ? predictChain(chain, pairs, x) : undefined;
}

let tfjsPredict: Predict | undefined;

/** Puts the fused prediction in place of LayersModel.predict (idempotent); it takes over only as described above. */
export function installFusedInference(): void {
  if (tfjsPredict) return;
  const proto = tf.LayersModel.prototype as unknown as { predict: Predict };
  const original = proto.predict;
  tfjsPredict = original;
  proto.predict = function (this: tf.LayersModel, x, args) {
    return fusedPredict(this, x, args) ?? original.call(this, x, args);
  };
}

/** Restores tfjs's own LayersModel.predict. */
export function uninstallFusedInference(): void {
  if (!tfjsPredict) return;
  (tf.LayersModel.prototype as unknown as { predict: Predict }).predict = tfjsPredict;
  tfjsPredict = undefined;
}

export const fusedInferenceInstalled = (): boolean => tfjsPredict !== undefined;
