/**
 * Max pooling after a fused conv + bias + ReLU layer, with ReLU's mask taken in the pooling's gradient
 * (relu-mask.ts): on a backend that registers MAX_POOL_GRAD_RELU (`native`, `wasm`), MaxPooling2D's call on such a
 * layer's output, with non-overlapping windows ('valid' padding, strides equal to the pool size) over channels-last
 * float32 data. Its forward pass is tfjs's maxPool; anything else runs tfjs's method.
 */
import * as tf from '@tensorflow/tfjs';
import { activeBackendHas } from './gradients';
import { type LayerPatch, layerCallPatch } from './layer-patch';
import { followsReluInThisPass, notePremasked } from './relu-mask';

/**
 * Inputs dy, input (a ReLU's output), output (the pooling's); attrs filterSize, strides, pad 'valid' (windows that
 * do not overlap); outputs [MaxPoolGrad's dx * step(input), its per-channel sums].
 */
export const MAX_POOL_GRAD_RELU = 'MaxPoolGradRelu';

/** The fields of tfjs-layers' Pooling2D that the patched call reads (tfjs-layers 4.22). */
interface PoolInternals {
  poolSize: [number, number];
  strides: [number, number];
  padding: string;
  dataFormat: string;
}

function takesOver(layer: PoolInternals, x: tf.Tensor): boolean {
  return (
    activeBackendHas(MAX_POOL_GRAD_RELU) &&
    x.dtype === 'float32' &&
    x.rank === 4 &&
    layer.dataFormat === 'channelsLast' &&
    layer.padding === 'valid' &&
    tf.util.arraysEqual(layer.poolSize, layer.strides) &&
    followsReluInThisPass(x)
  );
}

function maxPoolMaskingRelu(x: tf.Tensor, filterSize: [number, number], strides: [number, number]): tf.Tensor {
  const op = tf.customGrad((...args: Array<tf.Tensor | ((saved: tf.Tensor[]) => void)>) => {
    const input = args[0] as tf.Tensor4D;
    const save = args[1] as (saved: tf.Tensor[]) => void;
    const value = tf.maxPool(input, filterSize, strides, 'valid');
    save([input, value]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ys] = saved;
        const attrs = { filterSize, strides, pad: 'valid' };
        const [dx, sums] = tf.engine().runKernel(MAX_POOL_GRAD_RELU, { dy, input: xs, output: ys }, attrs) as tf.Tensor[];
        notePremasked(dx, xs, sums);
        return [dx];
      },
    };
  });
  return op(x);
}

/** MaxPooling2D's call, replaced (installed with the fused conv layers, conv-layers.ts). */
export const maxPoolingPatch: LayerPatch = layerCallPatch(
  () => tf.layers.maxPooling2d({ poolSize: 2 }),
  (layer, x) => {
    const pool = layer as PoolInternals;
    if (!takesOver(pool, x)) return undefined;
    return tf.tidy(() => maxPoolMaskingRelu(x, pool.poolSize, pool.strides));
  },
);
