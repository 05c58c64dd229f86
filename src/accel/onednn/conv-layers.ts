/**
 * Convolution + bias + ReLU as one kernel in Conv2D and SeparableConv2D layers, while `native` is the active backend.
 *
 * Under a gradient tape tfjs does not fuse a convolution's bias and ReLU (fused.conv2d runs conv2d, add and relu
 * when gradientDepth > 0), and SeparableConv2D never fuses them: two activation-sized passes per layer and step
 * that oneDNN's post-ops do for free inside the convolution. This runs the convolution as one kernel,
 * NativeConv2DBiasRelu (the native FusedConv2D), whose registered gradient takes ReLU's mask from the output,
 * dy * step(y), with the bias's gradient (its per-channel sums) in the same pass, and the convolution's two
 * gradients, each only when the tape needs it.
 *
 * As the batch-norm patch does, it replaces `call` on the two layer classes (../fused/layer-patch.ts) and takes over only layers
 * with a bias, a ReLU, channels-last data, 'same' or 'valid' padding and no dilation, on float32 input; the
 * separable layer's depthwise step stays tfjs's op. tests/accel-conv-patch.test.ts compares outputs and gradients
 * with tfjs's methods and cpu.
 */
import * as tf from '@tensorflow/tfjs';
import { NATIVE_BACKEND } from './backend';
import { NATIVE_RELU_GRAD_CHANNEL_SUMS } from './gradients';
import { type LayerPatch, type LayerVariableLike, isLayerVariable, layerCallPatch } from '../fused/layer-patch';

const CONV_BIAS_RELU = 'NativeConv2DBiasRelu';

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

function takesOver(layer: ConvInternals, x: tf.Tensor): boolean {
  if (tf.getBackend() !== NATIVE_BACKEND || x.dtype !== 'float32' || x.rank !== 4) return false;
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

function convBiasRelu(x: tf.Tensor, filter: tf.Tensor, bias: tf.Tensor, strides: number[], pad: string): tf.Tensor {
  return tf.engine().runKernel(CONV_BIAS_RELU, { x, filter, bias }, { strides, pad, dataFormat: 'NHWC', dilations: [1, 1] }) as tf.Tensor;
}

const conv2dPatch = layerCallPatch(
  () => tf.layers.conv2d({ filters: 1, kernelSize: 1 }),
  (layer, x) => {
    const conv = layer as ConvInternals;
    if (!takesOver(conv, x) || !isLayerVariable(conv.kernel)) return undefined;
    return tf.tidy(() => convBiasRelu(x, conv.kernel!.read(), conv.bias!.read(), conv.strides, conv.padding));
  },
);

const separablePatch = layerCallPatch(
  () => tf.layers.separableConv2d({ filters: 1, kernelSize: 1 }),
  (layer, x) => {
    const conv = layer as ConvInternals;
    if (!takesOver(conv, x) || !isLayerVariable(conv.depthwiseKernel) || !isLayerVariable(conv.pointwiseKernel)) return undefined;
    // tfjs's separableConv2d: the depthwise convolution, then a 1x1 convolution with stride 1 and no padding.
    return tf.tidy(() => {
      const depthwise = tf.depthwiseConv2d(
        x as tf.Tensor4D,
        conv.depthwiseKernel!.read() as tf.Tensor4D,
        conv.strides as [number, number],
        conv.padding as 'same' | 'valid',
      );
      return convBiasRelu(depthwise, conv.pointwiseKernel!.read(), conv.bias!.read(), [1, 1], 'valid');
    });
  },
);

const patches: LayerPatch[] = [conv2dPatch, separablePatch];

export const installFusedConvLayers = (): void => patches.forEach((p) => p.install());
export const uninstallFusedConvLayers = (): void => patches.forEach((p) => p.uninstall());
export const fusedConvLayersInstalled = (): boolean => patches.every((p) => p.installed());

/**
 * The forward pass is the native backend's own FusedConv2D (registry.ts: the addon, with its CPU fallback) with
 * activation 'relu'; the gradient is registered with it. Call after registerKernels.
 */
export function registerFusedConvLayers(): void {
  const fusedConv2d = tf.getKernel(tf.FusedConv2D, NATIVE_BACKEND)!.kernelFunc;
  tf.registerKernel({
    kernelName: CONV_BIAS_RELU,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args) => fusedConv2d({ ...args, attrs: { ...args.attrs, activation: 'relu' } }),
  });
  tf.registerGradient({
    kernelName: CONV_BIAS_RELU,
    inputsToSave: ['x', 'filter'],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter, y] = saved;
      const { strides, pad } = attrs as { strides: number[]; pad: string };
      const engine = tf.engine();
      // ReLU's mask and the bias's gradient (the mask's per-channel sums) in one pass.
      const [masked, biasGrad] = engine.runKernel(NATIVE_RELU_GRAD_CHANNEL_SUMS, { dy: dy as tf.Tensor, y }) as tf.Tensor[];
      const convAttrs = { strides, pad, dataFormat: 'NHWC' };
      return {
        x: () => engine.runKernel(tf.Conv2DBackpropInput, { dy: masked, filter }, { ...convAttrs, inputShape: x.shape }) as tf.Tensor,
        filter: () =>
          engine.runKernel(tf.Conv2DBackpropFilter, { x, dy: masked }, { ...convAttrs, filterShape: filter.shape }) as tf.Tensor,
        bias: () => biasGrad,
      };
    },
  });
  installFusedConvLayers();
}
