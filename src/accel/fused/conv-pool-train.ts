/**
 * Training with each Conv2D + bias + ReLU layer and the 2x2 / 2 max pooling after it as one kernel, where the active
 * backend has the kernels below (`native`). Separately, the layer writes its ReLU output (46 MB for block 1 at a
 * batch of 32, 150x150x16), the pooling reads it back, and the pooling's gradient reads it a third time to write a
 * gradient of the same size that both convolution gradients then read. Fused, the forward pass pools as it goes
 * (accel/onednn/src/winograd.cc) and keeps, for the gradient, one 16-bit code per pooled value and channel: which
 * tap won and what ReLU's mask needs there (pool.h). The convolution's gradients expand the masked gradient row by
 * row from the pooled one as they read it. The values are those of the separate kernels (MaxPoolGradRelu's dx and
 * sums, the same convolution algorithms), to the bit.
 *
 * The pair spans two layers, which a layer's call cannot, so this replaces LayersModel's call (what model.apply
 * runs) for training: a model that is one chain (chain.ts), called with `training: true` under a gradient tape on
 * one float32 tensor of its input shape, with at least one such pair whose filters come in multiples of 16. The
 * chain then runs layer by layer as tfjs's executor does, each pair as CONV_BIAS_RELU_MAX_POOL_TRAIN. Anything else
 * runs tfjs's method. tests/accel-conv-pool-train.test.ts compares the gradients with tfjs's method and cpu.
 */
import * as tf from '@tensorflow/tfjs';
import { type GraphLayer, chainOf, fitsModelInput, poolAttrs } from './chain';
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

const KERNELS = [CONV_BIAS_RELU_MAX_POOL_TRAIN, CONV_POOLED_GRAD_INPUT, CONV_POOLED_GRAD_FILTER, POOLED_RELU_GRAD_SUMS];

/** Whether `layer` and `next` form a pair the kernel takes, on a backend that has all four kernels. */
function trainingPair(layer: GraphLayer, next: GraphLayer | undefined): boolean {
  const pool = next ? poolAttrs(next) : undefined;
  if (!pool || layer.getClassName() !== 'Conv2D' || !conv2dRunsFused(layer)) return false;
  const halving = pool.poolPad === 'valid' && [...pool.poolSize, ...pool.poolStrides].every((d) => d === 2);
  const filters = conv2dBiasReluArgs(layer).filter.shape[3] ?? 0;
  return halving && filters % 16 === 0 && KERNELS.every((k) => activeBackendHas(k));
}

function runTrainingPair(layer: GraphLayer, next: GraphLayer, x: tf.Tensor): tf.Tensor {
  const { filter, bias, strides, pad } = conv2dBiasReluArgs(layer);
  const attrs = { strides, pad, ...poolAttrs(next)! };
  // The codes live on as the tape's saved output; the tidy around the chain disposes this handle.
  const [pooled] = tf.engine().runKernel(CONV_BIAS_RELU_MAX_POOL_TRAIN, { x, filter, bias }, attrs) as tf.Tensor[];
  return pooled;
}

type Kwargs = Record<string, unknown>;
type Call = (this: tf.LayersModel, inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs) => tf.Tensor | tf.Tensor[];

function fusedTrainingCall(model: tf.LayersModel, inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs | undefined) {
  if (kwargs?.training !== true || kwargs.mask != null || !recordingGradients()) return undefined;
  const x = Array.isArray(inputs) ? (inputs.length === 1 ? inputs[0] : undefined) : inputs;
  if (!x || x.rank !== 4 || !fitsModelInput(model, x)) return undefined;
  const chain = chainOf(model);
  const pairs = chain?.map((layer, i) => trainingPair(layer, chain[i + 1]));
  if (!chain || !pairs?.some(Boolean)) return undefined;
  return tf.tidy(() => {
    let value = x;
    for (let i = 0; i < chain.length; i++) {
      if (pairs[i] && value.rank === 4 && value.dtype === 'float32') {
        value = runTrainingPair(chain[i], chain[i + 1], value);
        i++;
      } else {
        value = chain[i].apply(value, kwargs) as tf.Tensor;
      }
    }
    return value;
  });
}

let gradientRegistered = false;

/** CONV_BIAS_RELU_MAX_POOL_TRAIN's gradient (tfjs's gradient registry is global); the codes output has none. */
function registerGradient(): void {
  if (gradientRegistered) return;
  gradientRegistered = true;
  tf.registerGradient({
    kernelName: CONV_BIAS_RELU_MAX_POOL_TRAIN,
    inputsToSave: ['x', 'filter'],
    outputsToSave: [false, true],
    gradFunc: (dys, saved, attrs) => {
      const [x, filter, codes] = saved;
      const dy = (dys as tf.Tensor[])[0];
      const engine = tf.engine();
      const gradAttrs = { ...(attrs as Kwargs), inputShape: x.shape, filterShape: filter.shape };
      return {
        x: () => engine.runKernel(CONV_POOLED_GRAD_INPUT, { dy, codes, filter }, gradAttrs) as tf.Tensor,
        filter: () => engine.runKernel(CONV_POOLED_GRAD_FILTER, { x, dy, codes }, gradAttrs) as tf.Tensor,
        bias: () => engine.runKernel(POOLED_RELU_GRAD_SUMS, { dy, codes }, gradAttrs) as tf.Tensor,
      };
    },
  });
}

let tfjsCall: Call | undefined;
let hadOwnCall = false;

/** Puts the fused training call in place on LayersModel (idempotent); it takes over only as described above. */
export function installFusedConvPoolTraining(): void {
  if (tfjsCall) return;
  registerGradient();
  const proto = tf.LayersModel.prototype as unknown as { call: Call };
  const original = proto.call;
  hadOwnCall = Object.prototype.hasOwnProperty.call(proto, 'call');
  tfjsCall = original;
  proto.call = function (this: tf.LayersModel, inputs, kwargs) {
    return fusedTrainingCall(this, inputs, kwargs) ?? original.call(this, inputs, kwargs);
  };
}

/** Restores tfjs's own call (Container's, which LayersModel inherits in tfjs-layers 4.22). */
export function uninstallFusedConvPoolTraining(): void {
  if (!tfjsCall) return;
  const proto = tf.LayersModel.prototype as unknown as { call?: Call };
  if (hadOwnCall) proto.call = tfjsCall;
  else delete proto.call;
  tfjsCall = undefined;
}

export const fusedConvPoolTrainingInstalled = (): boolean => tfjsCall !== undefined;
