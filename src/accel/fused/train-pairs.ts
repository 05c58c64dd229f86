/**
 * Training with each max pooling (2x2, stride 2) run together with the layer before it, where the active backend has
 * the kernels (`native`): a Conv2D with bias and ReLU (CONV_BIAS_RELU_MAX_POOL_TRAIN, below) or a training-mode
 * batch-norm (BATCH_NORM_MAX_POOL_TRAIN, batchnorm.ts). Separately, the layer writes its output (46 MB for block 1's
 * convolution at a batch of 32, 150x150x16; 23 MB for block 2's batch-norm), the pooling reads it back, and the
 * pooling's gradient reads it a third time to write a gradient of the same size for the layer's own gradient. Paired,
 * the forward pass pools as it goes and keeps, for the gradient, one 16-bit code per pooled value and channel: which
 * tap won, and what ReLU's mask needs there (accel/onednn/src/pool.h). The convolution's gradients and the
 * batch-norm's expand the (masked) gradient row by row from the pooled one as they read it (winograd.cc,
 * elementwise.cc). The values are the separate kernels' to the bit (MaxPoolGradRelu's dx and sums, MaxPoolGrad's dx,
 * the same convolution algorithms).
 *
 * A pair spans two layers, which a layer's call cannot, so this replaces LayersModel's call (what model.apply runs)
 * for training: a model that is one chain (chain.ts), called with `training: true` under a gradient tape on one
 * float32 tensor of its input shape, with at least one pair the backend can take. The chain then runs layer by layer
 * as tfjs's executor does, each pair as one kernel. Anything else runs tfjs's method. tests/accel-train-pairs.test.ts
 * compares the gradients with tfjs's method and cpu.
 */
import * as tf from '@tensorflow/tfjs';
import { type GraphLayer, chainOf, fitsModelInput, poolAttrs } from './chain';
import { BATCH_NORM_MAX_POOL_TRAIN, type PoolingAttrs, batchNormMaxPoolTraining } from './batchnorm';
import { conv2dBiasReluArgs, conv2dRunsFused } from './conv-layers';
import { activeBackendHas, recordingGradients } from './gradients';

/**
 * Inputs x, filter, bias; attrs strides, pad, poolSize, poolStrides, poolPad: outputs [maxPool(relu(conv2d(x,
 * filter) + bias)), its codes (int32, two 16-bit codes an element)], for a 2x2 / 2 pooling of 16k channels.
 */
export const CONV_BIAS_RELU_MAX_POOL_TRAIN = 'Conv2DBiasReluMaxPoolTrain';
/** Inputs dy (the pooling's), codes, filter; the forward attrs and inputShape: the convolution's input gradient. */
export const CONV_POOLED_GRAD_INPUT = 'Conv2DPooledGradInput';
/** Inputs x, dy (the pooling's), codes; the forward attrs and filterShape: the filter's gradient. */
export const CONV_POOLED_GRAD_FILTER = 'Conv2DPooledGradFilter';
/** Inputs dy (the pooling's), codes; the forward attrs, inputShape and filterShape: the bias's gradient. */
export const POOLED_RELU_GRAD_SUMS = 'PooledReluGradSums';

const CONV_KERNELS = [CONV_BIAS_RELU_MAX_POOL_TRAIN, CONV_POOLED_GRAD_INPUT, CONV_POOLED_GRAD_FILTER, POOLED_RELU_GRAD_SUMS];

type Kwargs = Record<string, unknown>;

/** The pooling layer `next`'s attributes where it is a 2x2 / 2 'valid' max pooling; else undefined. */
function halvingPool(next: GraphLayer | undefined): PoolingAttrs | undefined {
  const pool = next ? poolAttrs(next) : undefined;
  const halving = pool?.poolPad === 'valid' && [...pool.poolSize, ...pool.poolStrides].every((d) => d === 2);
  return halving ? pool : undefined;
}

function convPairFits(layer: GraphLayer): boolean {
  if (layer.getClassName() !== 'Conv2D' || !conv2dRunsFused(layer)) return false;
  const filters = conv2dBiasReluArgs(layer).filter.shape[3] ?? 0;
  return filters % 16 === 0 && CONV_KERNELS.every((k) => activeBackendHas(k));
}

/** Whether `layer` may pair with the pooling after it (the batch-norm's input is checked when it runs). */
function mayPair(layer: GraphLayer, next: GraphLayer | undefined): boolean {
  if (!halvingPool(next)) return false;
  return convPairFits(layer) || (layer.getClassName() === 'BatchNormalization' && activeBackendHas(BATCH_NORM_MAX_POOL_TRAIN));
}

/**
 * The conv pair as one op with its gradient (attrs: CONV_BIAS_RELU_MAX_POOL_TRAIN's). tf.customGrad keeps the codes
 * among the saved tensors: as a second output of a kernel with a registered gradient, they would get a zero gradient
 * of their size from the tape every step. It computes all three gradients, so the chain's first layer, whose input
 * (the model's) rarely needs one, is not paired.
 */
export function convPair(x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor, attrs: tf.NamedAttrMap): tf.Tensor {
  const engine = tf.engine();
  const op = tf.customGrad((...args: Array<tf.Tensor | ((saved: tf.Tensor[]) => void)>) => {
    const [input, w, b] = args as tf.Tensor[];
    const save = args[3] as (saved: tf.Tensor[]) => void;
    const [pooled, codes] = engine.runKernel(CONV_BIAS_RELU_MAX_POOL_TRAIN, { x: input, filter: w, bias: b }, attrs) as tf.Tensor[];
    save([input, w, codes]);
    return {
      value: pooled,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ws, cs] = saved;
        const gradAttrs = { ...attrs, inputShape: xs.shape, filterShape: ws.shape };
        return [
          engine.runKernel(CONV_POOLED_GRAD_INPUT, { dy, codes: cs, filter: ws }, gradAttrs) as tf.Tensor,
          engine.runKernel(CONV_POOLED_GRAD_FILTER, { x: xs, dy, codes: cs }, gradAttrs) as tf.Tensor,
          engine.runKernel(POOLED_RELU_GRAD_SUMS, { dy, codes: cs }, gradAttrs) as tf.Tensor,
        ];
      },
    };
  });
  return op(x, filter, bias) as tf.Tensor;
}

/**
 * `layer` (the chain's layer `index`) and the pooling after it on x as one kernel, or undefined where they cannot be.
 */
function runPair(layer: GraphLayer, index: number, pooling: PoolingAttrs, x: tf.Tensor, kwargs: Kwargs): tf.Tensor | undefined {
  if (layer.getClassName() === 'BatchNormalization') return batchNormMaxPoolTraining(layer, x, kwargs, pooling);
  if (index === 0 || !convPairFits(layer)) return undefined;
  const { filter, bias, strides, pad } = conv2dBiasReluArgs(layer);
  return convPair(x, filter, bias, { strides, pad, ...pooling });
}

type Call = (this: tf.LayersModel, inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs) => tf.Tensor | tf.Tensor[];

function fusedTrainingCall(model: tf.LayersModel, inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs | undefined) {
  if (kwargs?.training !== true || kwargs.mask != null || !recordingGradients()) return undefined;
  const x = Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : undefined) : inputs;
  if (!x || x.rank !== 4 || !fitsModelInput(model, x)) return undefined;
  const chain = chainOf(model);
  if (!chain || !chain.some((layer, i) => i > 0 && mayPair(layer, chain[i + 1]))) return undefined;
  return tf.tidy(() => {
    let value = x;
    for (let i = 0; i < chain.length; i++) {
      const pooling = halvingPool(chain[i + 1]);
      const paired = pooling && value.rank === 4 && value.dtype === 'float32' ? runPair(chain[i], i, pooling, value, kwargs) : undefined;
      if (paired) {
        value = paired;
        i++;
      } else {
        value = chain[i].apply(value, kwargs) as tf.Tensor;
      }
    }
    return value;
  });
}

let tfjsCall: Call | undefined;
let hadOwnCall = false;

/** Puts the fused training call in place on LayersModel (idempotent); it takes over only as described above. */
export function installFusedTrainingPairs(): void {
  if (tfjsCall) return;
  const proto = tf.LayersModel.prototype as unknown as { call: Call };
  const original = proto.call;
  hadOwnCall = Object.prototype.hasOwnProperty.call(proto, 'call');
  tfjsCall = original;
  proto.call = function (this: tf.LayersModel, inputs, kwargs) {
    return fusedTrainingCall(this, inputs, kwargs) ?? original.call(this, inputs, kwargs);
  };
}

/** Restores tfjs's own call (Container's, which LayersModel inherits in tfjs-layers 4.22). */
export function uninstallFusedTrainingPairs(): void {
  if (!tfjsCall) return;
  const proto = tf.LayersModel.prototype as unknown as { call?: Call };
  if (hadOwnCall) proto.call = tfjsCall;
  else delete proto.call;
  tfjsCall = undefined;
}

export const fusedTrainingPairsInstalled = (): boolean => tfjsCall !== undefined;
