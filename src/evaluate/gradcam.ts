/**
 * Grad-CAM (Selvaraju et al. 2017) for the single-sigmoid pneumonia model: which regions of the X-ray pushed
 * the prediction towards PNEUMONIA.
 *
 * The gradient is taken with respect to an intermediate feature map, which tf.grad cannot address inside a
 * LayersModel. So the graph is re-run by hand from that feature map onwards (`runGraph`): the feature map is fed
 * as a value and every later layer is applied to concrete tensors in inference mode (dropout off, batch-norm on
 * moving statistics). This works for any functional graph, not only layer chains.
 */
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { LAST_CONV_LAYER } from '../model';
import { imageInput } from '../model/input';

type SymbolicTensor = tf.SymbolicTensor;

const CONV_CLASSES = new Set(['Conv2D', 'SeparableConv2D', 'DepthwiseConv2D']);

/** Every symbolic tensor the model's output depends on, inputs first (depth-first post-order). */
function graphTensors(model: tf.LayersModel): SymbolicTensor[] {
  const seen = new Set<number>();
  const ordered: SymbolicTensor[] = [];
  const visit = (t: SymbolicTensor) => {
    if (seen.has(t.id)) return;
    seen.add(t.id);
    for (const input of t.inputs ?? []) visit(input);
    ordered.push(t);
  };
  model.outputs.forEach(visit);
  return ordered;
}

/**
 * The feature map Grad-CAM explains: the named layer, else the project's LAST_CONV_LAYER when the model has it,
 * else the last convolution, else the last 4D output.
 */
function findFeatureMap(model: tf.LayersModel, layerName?: string): SymbolicTensor {
  const tensors = graphTensors(model).filter((t) => t.sourceLayer.getClassName() !== 'InputLayer');
  const spatial = tensors.filter((t) => t.shape.length === 4);
  const byName = (name: string) => spatial.filter((t) => t.sourceLayer.name === name).pop();
  if (layerName !== undefined) {
    const found = byName(layerName);
    if (!found) {
      throw new Error(
        `gradCam: layer '${layerName}' is not a 4D feature map of this model; ` +
          `choose one of: ${[...new Set(spatial.map((t) => t.sourceLayer.name))].join(', ')}`,
      );
    }
    return found;
  }
  const chosen =
    byName(LAST_CONV_LAYER) ?? spatial.filter((t) => CONV_CLASSES.has(t.sourceLayer.getClassName())).pop() ?? spatial[spatial.length - 1];
  if (!chosen) throw new Error('gradCam: the model has no layer with a 4D (spatial) output to explain');
  return chosen;
}

/**
 * Evaluates `target` from the values already in `values` (keyed by symbolic tensor id), applying each layer to
 * concrete tensors in inference mode. A value fed for an intermediate tensor cuts the graph there.
 */
function runGraph(target: SymbolicTensor, values: Map<number, tf.Tensor>): tf.Tensor {
  const known = values.get(target.id);
  if (known) return known;
  const layer = target.sourceLayer;
  if (layer.getClassName() === 'InputLayer') {
    throw new Error(`gradCam: no value fed for model input '${target.name}'`);
  }
  const inputs = target.inputs.map((input) => runGraph(input, values));
  const outputs = layer.apply(inputs.length === 1 ? inputs[0] : inputs, { ...target.callArgs, training: false });
  const list = Array.isArray(outputs) ? outputs : [outputs];
  const value = list[target.outputTensorIndex ?? 0] as tf.Tensor;
  values.set(target.id, value);
  return value;
}

/**
 * The scalar whose gradient is explained: the PNEUMONIA logit when the model ends in a sigmoid (a saturated
 * probability has vanishing gradients and would give an empty map), otherwise the output itself.
 */
function scoreFunction(model: tf.LayersModel): (values: Map<number, tf.Tensor>) => tf.Scalar {
  const output = model.outputs[0];
  const outputSize = output.shape.slice(1).reduce((a: number, b) => a * (b ?? 1), 1);
  if (model.outputs.length !== 1 || outputSize !== 1) {
    throw new Error(`gradCam: expected one output unit (PNEUMONIA probability), got shape ${JSON.stringify(output.shape)}`);
  }
  const layer = output.sourceLayer;
  const activation = (layer.getConfig() as { activation?: unknown }).activation;
  if (layer.getClassName() === 'Dense' && activation === 'sigmoid') {
    return (values) => {
      const hidden = runGraph(output.inputs[0], values);
      const [kernel, bias] = layer.getWeights();
      const logit = tf.matMul(hidden.reshape([-1, kernel.shape[0]]), kernel);
      return (bias ? logit.add(bias) : logit).sum();
    };
  }
  if (layer.getClassName() === 'Activation' && activation === 'sigmoid') {
    return (values) => runGraph(output.inputs[0], values).sum();
  }
  return (values) => runGraph(output, values).sum();
}

export async function gradCam(
  model: tf.LayersModel,
  image: Uint8Array,
  size: number,
  opts: { layerName?: string } = {},
): Promise<{ heatmap: Float32Array; probability: number }> {
  const featureMapSymbol = findFeatureMap(model, opts.layerName);
  const score = scoreFunction(model);
  const inputSymbol = model.inputs[0];
  const [heatmapTensor, probabilityTensor] = tf.tidy(() => {
    const x = imageInput(model, image, size);
    const forward = new Map<number, tf.Tensor>([[inputSymbol.id, x]]);
    const featureMap = runGraph(featureMapSymbol, forward);
    const probability = runGraph(model.outputs[0], forward).reshape([]);
    const gradients = tf.grad((fed: tf.Tensor) =>
      score(
        new Map([
          [inputSymbol.id, x],
          [featureMapSymbol.id, fed],
        ]),
      ),
    )(featureMap);
    // Channel importance = spatially averaged gradient; the map keeps only evidence FOR pneumonia (ReLU).
    const channelWeights = gradients.mean([1, 2], true);
    const cam = tf.relu(featureMap.mul(channelWeights).sum(-1, true)) as tf.Tensor4D;
    const upsampled = tf.image.resizeBilinear(cam, [size, size], false, true);
    const normalised = upsampled.div(tf.maximum(upsampled.max(), 1e-12)).clipByValue(0, 1);
    return [normalised.reshape([size * size]), probability];
  });
  const heatmap = (await heatmapTensor.data()) as Float32Array;
  const probability = (await probabilityTensor.data())[0];
  tf.dispose([heatmapTensor, probabilityTensor]);
  return { heatmap, probability };
}

/** Jet colour map: 0 -> dark blue, 0.5 -> green/yellow, 1 -> dark red. Returns 0..255 RGB. */
export function jet(t: number): [number, number, number] {
  const channel = (offset: number) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * t - offset))));
  return [channel(3), channel(2), channel(1)];
}

/**
 * The grayscale X-ray with the jet-coloured heatmap blended on top at constant `alpha`, as packed RGB; pure, so
 * the web app (src/app/browser.ts) draws the same overlay as `npm run predict --gradcam`.
 */
export function overlayRgb(image: Uint8Array, heatmap: Float32Array, alpha: number): Uint8Array {
  const rgb = new Uint8Array(image.length * 3);
  for (let p = 0; p < image.length; p++) {
    const colour = jet(Math.min(1, Math.max(0, heatmap[p])));
    for (let c = 0; c < 3; c++) rgb[p * 3 + c] = Math.round((1 - alpha) * image[p] + alpha * colour[c]);
  }
  return rgb;
}

/**
 * PNG of the grayscale X-ray with the jet-coloured heatmap blended on top at constant `alpha` (default 0.4),
 * optionally resized to `outSize` x `outSize`.
 */
export async function gradCamOverlayPng(
  image: Uint8Array,
  heatmap: Float32Array,
  size: number,
  opts: { alpha?: number; outSize?: number } = {},
): Promise<Buffer> {
  const alpha = opts.alpha ?? 0.4;
  const outSize = opts.outSize ?? size;
  if (image.length !== size * size || heatmap.length !== size * size) {
    throw new Error(`gradCamOverlayPng: image (${image.length}) and heatmap (${heatmap.length}) must both hold ${size}x${size} values`);
  }
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`gradCamOverlayPng: alpha must be in [0, 1], got ${alpha}`);
  if (!Number.isInteger(outSize) || outSize < 1) {
    throw new Error(`gradCamOverlayPng: outSize must be a positive integer, got ${outSize}`);
  }
  const rgb = Buffer.from(overlayRgb(image, heatmap, alpha).buffer);
  let picture = sharp(rgb, { raw: { width: size, height: size, channels: 3 } });
  if (outSize !== size) picture = picture.resize(outSize, outSize, { kernel: 'lanczos3' });
  return picture.png().toBuffer();
}
