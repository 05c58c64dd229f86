/**
 * Convolution + bias + ReLU as one kernel in Conv2D and SeparableConv2D layers, on every backend that registers
 * the two kernels below (`native`: onednn/index.ts; `wasm`: wasm/fused.ts).
 *
 * Under a gradient tape tfjs does not fuse a convolution's bias and ReLU (fused.conv2d runs conv2d, add and relu
 * when gradientDepth > 0), and SeparableConv2D never fuses them: two activation-sized passes per layer and step
 * that the backend's fused convolution (oneDNN's post-ops, XNNPACK's clamp) does for free. This runs the
 * convolution as one kernel, CONV_BIAS_RELU (the backend's own FusedConv2D with a ReLU), whose registered gradient
 * takes ReLU's mask from the output, dy * step(y), with the bias's gradient (its per-channel sums) in the same
 * pass (RELU_GRAD_CHANNEL_SUMS), and the convolution's two gradients, each only when the tape needs it.
 *
 * As the batch-norm patch does, it replaces `call` on the two layer classes (layer-patch.ts) and takes over only
 * layers with a bias, a ReLU, channels-last data, 'same' or 'valid' padding and no dilation, on float32 input; the
 * separable layer's depthwise step stays tfjs's op. tests/accel-conv-patch.test.ts compares outputs and gradients
 * with tfjs's methods and cpu.
 *
 * Outside any gradient computation (prediction, validation), a separable layer with a 3x3 depthwise filter, stride
 * 1 and 'same' padding runs as one kernel where the backend has it (SEPARABLE_CONV_BIAS_RELU, `native`), so that
 * the depthwise output never goes out to memory. Under a tape the two convolutions stay apart: the pointwise
 * filter's gradient needs the depthwise output, and SEPARABLE_CONV_BIAS_RELU has no gradient.
 */
import * as tf from '@tensorflow/tfjs';
import { activeBackendHas, recordingGradients } from './gradients';
import { type LayerPatch, type LayerVariableLike, isLayerVariable, layerCallPatch } from './layer-patch';
import { maxPoolingPatch } from './pool-layers';
import { noteReluOutput, premaskedSums } from './relu-mask';

/** The backend's FusedConv2D with a bias and activation 'relu' (registerConvBiasRelu makes it). */
export const CONV_BIAS_RELU = 'Conv2DBiasRelu';
/** Inputs dy and y (a conv + bias + ReLU output, channels last); outputs [dy * step(y), its per-channel sums]. */
export const RELU_GRAD_CHANNEL_SUMS = 'ReluGradChannelSums';
/**
 * Inputs x (one channel), dy and y (the layer's output); attrs strides, pad, filterShape; outputs [the filter's
 * gradient, the bias's]: the two gradients of a one-channel layer (a grayscale network's first) from dy * step(y)
 * without writing that product out. A backend registers it where it has such a kernel (`native`).
 */
export const RELU_FILTER_GRAD_ONE_CHANNEL = 'ReluFilterGradOneChannel';
/**
 * Inputs x, depthwiseFilter [3, 3, ci, 1], pointwiseFilter [1, 1, ci, co], bias [co]: relu(bias + the 1x1
 * convolution of x's depthwise convolution, stride 1, 'same' padding), for inference only (no gradient).
 */
export const SEPARABLE_CONV_BIAS_RELU = 'SeparableConv2dBiasRelu';

/** The fields of tfjs-layers' Conv2D / SeparableConv2D that the patched calls read (tfjs-layers 4.22). */
interface ConvInternals {
  rank: number;
  dataFormat: string;
  padding: string;
  strides: number[];
  dilationRate: number | number[];
  useBias: boolean;
  activation: { getClassName(): string } | null;
  bias: LayerVariableLike | null;
  kernel?: LayerVariableLike;
  depthwiseKernel?: LayerVariableLike;
  pointwiseKernel?: LayerVariableLike;
}

/** Whether the layer is one CONV_BIAS_RELU can run, on a backend that has it; its input is checked apart. */
function fusableLayer(layer: ConvInternals): boolean {
  if (!activeBackendHas(CONV_BIAS_RELU)) return false;
  const dilations = Array.isArray(layer.dilationRate) ? layer.dilationRate : [layer.dilationRate];
  return (
    layer.rank === 2 &&
    layer.dataFormat === 'channelsLast' &&
    (layer.padding === 'same' || layer.padding === 'valid') &&
    dilations.every((d) => d === 1) &&
    layer.useBias &&
    isLayerVariable(layer.bias) &&
    layer.activation?.getClassName() === 'relu'
  );
}

function takesOver(layer: ConvInternals, x: tf.Tensor): boolean {
  return x.dtype === 'float32' && x.rank === 4 && fusableLayer(layer);
}

function convBiasRelu(x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor, strides: number[], pad: string): tf.Tensor {
  const y = tf
    .engine()
    .runKernel(CONV_BIAS_RELU, { x, filter, bias }, { strides, pad, dataFormat: 'NHWC', dilations: [1, 1] }) as tf.Tensor;
  noteReluOutput(y); // the next layer may take the ReLU mask in its gradient (relu-mask.ts)
  return y;
}

/**
 * Whether the patched call runs this Conv2D layer as CONV_BIAS_RELU, on a float32 4D input (inference.ts asks, before
 * it has the input).
 */
export function conv2dRunsFused(layer: unknown): boolean {
  const conv = layer as ConvInternals;
  return fusableLayer(conv) && isLayerVariable(conv.kernel);
}

/** A Conv2D layer's weights and geometry as CONV_BIAS_RELU takes them (where conv2dRunsFused says it does). */
export function conv2dBiasReluArgs(layer: unknown): { filter: tf.Tensor; bias: tf.Tensor; strides: number[]; pad: string } {
  const conv = layer as ConvInternals;
  return { filter: conv.kernel!.read(), bias: conv.bias!.read(), strides: conv.strides, pad: conv.padding };
}

const conv2dPatch = layerCallPatch(
  () => tf.layers.conv2d({ filters: 1, kernelSize: 1 }),
  (layer, x) => {
    if (x.dtype !== 'float32' || x.rank !== 4 || !conv2dRunsFused(layer)) return undefined;
    const { filter, bias, strides, pad } = conv2dBiasReluArgs(layer);
    return tf.tidy(() => convBiasRelu(x, filter, bias, strides, pad));
  },
);

/** Whether a separable layer's forward pass may run as SEPARABLE_CONV_BIAS_RELU now. */
function separableInOnePass(conv: ConvInternals, depthwiseKernel: tf.Tensor): boolean {
  const [kh, kw, , multiplier] = depthwiseKernel.shape;
  return (
    kh === 3 &&
    kw === 3 &&
    multiplier === 1 &&
    conv.padding === 'same' &&
    conv.strides.every((s) => s === 1) &&
    !recordingGradients() &&
    activeBackendHas(SEPARABLE_CONV_BIAS_RELU)
  );
}

const separablePatch = layerCallPatch(
  () => tf.layers.separableConv2d({ filters: 1, kernelSize: 1 }),
  (layer, x) => {
    const conv = layer as ConvInternals;
    if (!takesOver(conv, x) || !isLayerVariable(conv.depthwiseKernel) || !isLayerVariable(conv.pointwiseKernel)) return undefined;
    const depthwiseFilter = conv.depthwiseKernel.read();
    if (separableInOnePass(conv, depthwiseFilter)) {
      const inputs = { x, depthwiseFilter, pointwiseFilter: conv.pointwiseKernel.read(), bias: conv.bias!.read() };
      return tf.engine().runKernel(SEPARABLE_CONV_BIAS_RELU, inputs, {}) as tf.Tensor;
    }
    // tfjs's separableConv2d: the depthwise convolution, then a 1x1 convolution with stride 1 and no padding.
    return tf.tidy(() => {
      const depthwise = tf.depthwiseConv2d(
        x as tf.Tensor4D,
        depthwiseFilter as tf.Tensor4D,
        conv.strides as [number, number],
        conv.padding as 'same' | 'valid',
      );
      return convBiasRelu(depthwise, conv.pointwiseKernel!.read(), conv.bias!.read(), [1, 1], 'valid');
    });
  },
);

// The max-pooling patch goes with them: it takes over only after a fused layer, to take its ReLU mask.
const patches: LayerPatch[] = [conv2dPatch, separablePatch, maxPoolingPatch];

/** CONV_BIAS_RELU on `backendName`: its registered FusedConv2D with activation 'relu'. */
export function registerConvBiasRelu(backendName: string): void {
  const fusedConv2d = tf.getKernel(tf.FusedConv2D, backendName)!.kernelFunc;
  tf.registerKernel({
    kernelName: CONV_BIAS_RELU,
    backendName,
    kernelFunc: (args) => fusedConv2d({ ...args, attrs: { ...args.attrs, activation: 'relu' } }),
  });
}

let gradientRegistered = false;

/** CONV_BIAS_RELU's gradient, for every backend (tfjs's gradient registry is global). */
function registerConvBiasReluGradient(): void {
  if (gradientRegistered) return;
  gradientRegistered = true;
  tf.registerGradient({
    kernelName: CONV_BIAS_RELU,
    inputsToSave: ['x', 'filter'],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter, y] = saved;
      const { strides, pad } = attrs as { strides: number[]; pad: string };
      const engine = tf.engine();
      const convAttrs = { strides, pad, dataFormat: 'NHWC' };
      const inputGrad = (masked: tf.Tensor) =>
        engine.runKernel(tf.Conv2DBackpropInput, { dy: masked, filter }, { ...convAttrs, inputShape: x.shape }) as tf.Tensor;
      if (x.shape[3] === 1 && activeBackendHas(RELU_FILTER_GRAD_ONE_CHANNEL)) {
        // The first layer of a grayscale network: both weight gradients in one pass over dy and y. Its input
        // rarely needs a gradient (the tape asks only for what it needs); when it does, the mask is made for it.
        const [filterGrad, biasGrad] = engine.runKernel(
          RELU_FILTER_GRAD_ONE_CHANNEL,
          { x, dy: dy as tf.Tensor, y },
          { ...convAttrs, filterShape: filter.shape },
        ) as tf.Tensor[];
        return {
          x: () => inputGrad((engine.runKernel(RELU_GRAD_CHANNEL_SUMS, { dy: dy as tf.Tensor, y }) as tf.Tensor[])[0]),
          filter: () => filterGrad,
          bias: () => biasGrad,
        };
      }
      // ReLU's mask and the bias's gradient (the mask's per-channel sums) in one pass, unless the next layer's gradient
      // took them already (relu-mask.ts).
      const sums = premaskedSums(dy as tf.Tensor, y);
      const [masked, biasGrad] = sums
        ? [dy as tf.Tensor, sums]
        : (engine.runKernel(RELU_GRAD_CHANNEL_SUMS, { dy: dy as tf.Tensor, y }) as tf.Tensor[]);
      return {
        x: () => inputGrad(masked),
        filter: () =>
          engine.runKernel(tf.Conv2DBackpropFilter, { x, dy: masked }, { ...convAttrs, filterShape: filter.shape }) as tf.Tensor,
        bias: () => biasGrad,
      };
    },
  });
}

/** Puts the fused calls in place (idempotent); they take over only on backends with both kernels registered. */
export const installFusedConvLayers = (): void => {
  registerConvBiasReluGradient();
  patches.forEach((p) => p.install());
};
export const uninstallFusedConvLayers = (): void => patches.forEach((p) => p.uninstall());
export const fusedConvLayersInstalled = (): boolean => patches.every((p) => p.installed());
