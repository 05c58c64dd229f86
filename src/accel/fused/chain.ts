/**
 * A model as one chain of layers, for the replacements of LayersModel.predict (inference.ts) and of its call in
 * training (train-pairs.ts): each runs some neighbouring layers as one kernel, which a layer's own call cannot,
 * since it cannot see the layer after it.
 */
import type * as tf from '@tensorflow/tfjs';

/** tfjs-layers' internal graph, as much of it as the chain check reads (tfjs-layers 4.22). */
interface LayerNode {
  inboundLayers: unknown[];
}
export interface GraphLayer {
  getClassName(): string;
  inboundNodes: LayerNode[];
  outboundNodes: LayerNode[];
  apply(x: tf.Tensor, kwargs?: Record<string, unknown>): tf.Tensor | tf.Tensor[];
}
interface PoolInternals {
  poolSize: [number, number];
  strides: [number, number];
  padding: string;
  dataFormat: string;
}

/** The model's layers after its input layer, when they form one chain from input to output; else undefined. */
function findChain(model: tf.LayersModel): GraphLayer[] | undefined {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return undefined;
  const layers = model.layers as unknown as GraphLayer[];
  if (layers.length < 2 || layers[0].getClassName() !== 'InputLayer') return undefined;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i];
    if (layer.outboundNodes.length !== (i === layers.length - 1 ? 0 : 1)) return undefined;
    if (i === 0) continue;
    const inbound = layer.inboundNodes;
    if (inbound.length !== 1 || inbound[0].inboundLayers.length !== 1 || inbound[0].inboundLayers[0] !== layers[i - 1]) {
      return undefined;
    }
  }
  return model.outputs[0].sourceLayer === (layers[layers.length - 1] as unknown) ? layers.slice(1) : undefined;
}

/** Chains found so far, per model (a model's layers do not change once it is built). */
const chains = new WeakMap<tf.LayersModel, GraphLayer[] | null>();

/** findChain's answer for `model`, found once. */
export function chainOf(model: tf.LayersModel): GraphLayer[] | undefined {
  if (!chains.has(model)) chains.set(model, findChain(model) ?? null);
  return chains.get(model) ?? undefined;
}

/** A channels-last MaxPooling2D layer's poolSize, poolStrides and poolPad, as the fused kernels take them; else undefined. */
export function poolAttrs(layer: GraphLayer): { poolSize: [number, number]; poolStrides: [number, number]; poolPad: string } | undefined {
  if (layer.getClassName() !== 'MaxPooling2D') return undefined;
  const pool = layer as unknown as PoolInternals;
  if (pool.dataFormat !== 'channelsLast') return undefined;
  return { poolSize: pool.poolSize, poolStrides: pool.strides, poolPad: pool.padding };
}

/** Whether x matches the model's one input shape (any batch size). */
export function fitsModelInput(model: tf.LayersModel, x: tf.Tensor): boolean {
  const shape = model.inputs[0].shape;
  return x.dtype === 'float32' && x.rank === shape.length && shape.every((d, i) => d == null || d === x.shape[i]) && x.shape[0] > 0;
}
