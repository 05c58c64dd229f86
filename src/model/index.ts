/**
 * The pneumonia CNN (the seed article's architecture) and a small variant for quick iteration.
 *
 * Layer names are part of the API: Grad-CAM finds the last convolutional block by name
 * (LAST_CONV_LAYER), and summaries/reports print them.
 */
import * as tf from '@tensorflow/tfjs';
import { PerImageNormalization, type InputNormalization } from './normalization';

export type ModelVariant = 'seed' | 'small';

export interface ModelConfig {
  variant: ModelVariant;
  /** Square input side in pixels (150 in the seed article). */
  imageSize: number;
  /** 1 for grayscale (default), 3 for RGB. */
  channels?: number;
  /**
   * Seed for every initialiser, so a build is reproducible. Dropout layers are built unseeded: training seeds
   * their masks step by step from the run's seed (src/train/step-layers.ts).
   */
  seed?: number;
  /** Per-image intensity normalization as the first layer (src/normalization.ts); default none. */
  normalize?: InputNormalization;
}

export const DEFAULT_MODEL: ModelConfig = { variant: 'seed', imageSize: 150, channels: 1, seed: 42 };

/**
 * The layer whose 4D output Grad-CAM uses: the batch-norm at the end of the last conv block,
 * i.e. the last feature map before pooling. Both variants have five blocks, so the name is shared.
 */
export const LAST_CONV_LAYER = 'block5_bn';

interface VariantShape {
  /** Filters of block 1 (plain conv2d) and blocks 2..5 (separable conv2d). */
  filters: [number, number, number, number, number];
  /** Dense head units with their dropout rates. */
  dense: Array<{ units: number; dropout: number }>;
}

const VARIANTS: Record<ModelVariant, VariantShape> = {
  seed: {
    filters: [16, 32, 64, 128, 256],
    dense: [
      { units: 512, dropout: 0.7 },
      { units: 128, dropout: 0.5 },
      { units: 64, dropout: 0.3 },
    ],
  },
  // Same story with a fraction of the width: trains in seconds on 64x64 inputs.
  small: {
    filters: [4, 8, 8, 16, 16],
    dense: [
      { units: 32, dropout: 0.3 },
      { units: 16, dropout: 0.2 },
    ],
  },
};

const BLOCKS_WITH_DROPOUT = new Set([4, 5]);
const BLOCK_DROPOUT = 0.2;
const POOLINGS = 5;

/** Hands out distinct, deterministic seeds to each initialiser in build order. */
function seedSequence(base: number): () => number {
  let next = base;
  return () => next++;
}

/**
 * Variance-preserving initialisers, so a freshly built network passes its signal through all five blocks.
 *
 * Keras's default (Glorot) computes a depthwise kernel's fan-in as 3*3*channels although each output reads only 3*3
 * inputs, so every separable conv shrank the activation variance by about channels/2: 2e-6 at block2_bn and 1e-17
 * at block5_bn. Far below batch-norm's epsilon (1e-3), batch-norm could not rescale it, the output sat at 0.5 and
 * the gradients vanished; a run with few steps never recovered. tfjs's fan-out of a [3,3,C,1] depthwise kernel is
 * the 3*3 taps each output reads, so 'fanOut' with scale 1 keeps the variance; layers followed by ReLU use He.
 * The output layer starts small: the head's dropouts scale kept units by 1/(1-p) (about 10x in all), and with a
 * full-size output layer the first training-mode logits had a standard deviation of 4 and losses of 3-5.
 */
function initializers(nextSeed: () => number) {
  return {
    relu: () => tf.initializers.heUniform({ seed: nextSeed() }),
    depthwise: () => tf.initializers.varianceScaling({ scale: 1, mode: 'fanOut', distribution: 'uniform', seed: nextSeed() }),
    output: () => tf.initializers.varianceScaling({ scale: 0.01, mode: 'fanIn', distribution: 'uniform', seed: nextSeed() }),
  };
}

function checkConfig(cfg: ModelConfig): void {
  if (!(cfg.variant in VARIANTS)) {
    throw new Error(`Unknown model variant '${cfg.variant}'; use 'seed' or 'small'.`);
  }
  if (!Number.isInteger(cfg.imageSize) || cfg.imageSize < 2 ** POOLINGS) {
    throw new Error(`Model imageSize must be an integer >= ${2 ** POOLINGS} (five 2x2 poolings); got ${cfg.imageSize}.`);
  }
  const channels = cfg.channels ?? 1;
  if (channels !== 1 && channels !== 3) {
    throw new Error(`Model channels must be 1 (grayscale) or 3 (RGB); got ${channels}.`);
  }
}

/** Builds the (uncompiled) model; training code chooses optimiser and loss. */
export function buildModel(cfg: ModelConfig): tf.LayersModel {
  checkConfig(cfg);
  const shape = VARIANTS[cfg.variant];
  const channels = cfg.channels ?? 1;
  const nextSeed = seedSequence(cfg.seed ?? DEFAULT_MODEL.seed ?? 42);
  const init = initializers(nextSeed);

  const input = tf.input({ shape: [cfg.imageSize, cfg.imageSize, channels], name: 'input' });
  let x: tf.SymbolicTensor = input;
  if (cfg.normalize && cfg.normalize !== 'none') {
    x = new PerImageNormalization({ mode: cfg.normalize, name: 'input_normalization' }).apply(x) as tf.SymbolicTensor;
  }

  for (const i of [1, 2]) {
    x = tf.layers
      .conv2d({
        name: `block1_conv${i}`,
        filters: shape.filters[0],
        kernelSize: 3,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: init.relu(),
      })
      .apply(x) as tf.SymbolicTensor;
  }
  x = tf.layers.maxPooling2d({ name: 'block1_pool', poolSize: 2 }).apply(x) as tf.SymbolicTensor;

  for (let block = 2; block <= 5; block++) {
    for (const i of [1, 2]) {
      x = tf.layers
        .separableConv2d({
          name: `block${block}_sepconv${i}`,
          filters: shape.filters[block - 1],
          kernelSize: 3,
          padding: 'same',
          activation: 'relu',
          depthwiseInitializer: init.depthwise(),
          pointwiseInitializer: init.relu(),
        })
        .apply(x) as tf.SymbolicTensor;
    }
    // Momentum 0.9 is PyTorch's default (the peer's); Keras's 0.99 leaves the moving variance near its initial 1
    // for hundreds of steps while the real batch variance here is ~1e-4, so inference-mode validation stays flat.
    x = tf.layers.batchNormalization({ name: `block${block}_bn`, momentum: 0.9 }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.maxPooling2d({ name: `block${block}_pool`, poolSize: 2 }).apply(x) as tf.SymbolicTensor;
    if (BLOCKS_WITH_DROPOUT.has(block)) {
      x = tf.layers.dropout({ name: `block${block}_dropout`, rate: BLOCK_DROPOUT }).apply(x) as tf.SymbolicTensor;
    }
  }

  x = tf.layers.flatten({ name: 'flatten' }).apply(x) as tf.SymbolicTensor;
  for (const { units, dropout } of shape.dense) {
    x = tf.layers
      .dense({ name: `dense_${units}`, units, activation: 'relu', kernelInitializer: init.relu() })
      .apply(x) as tf.SymbolicTensor;
    x = tf.layers.dropout({ name: `dense_${units}_dropout`, rate: dropout }).apply(x) as tf.SymbolicTensor;
  }
  const output = tf.layers
    .dense({ name: 'output', units: 1, activation: 'sigmoid', kernelInitializer: init.output() })
    .apply(x) as tf.SymbolicTensor;

  return tf.model({ inputs: input, outputs: output, name: `pneumonia_${cfg.variant}` });
}

export interface ModelSummaryRow {
  layer: string;
  type: string;
  outputShape: string;
  params: number;
}

function formatShape(shape: tf.Shape | tf.Shape[]): string {
  const one = (s: tf.Shape) => `[${s.map((d) => (d == null ? 'null' : String(d))).join(',')}]`;
  return Array.isArray(shape[0]) ? (shape as tf.Shape[]).map(one).join(' ') : one(shape as tf.Shape);
}

/** One row per layer: name, class, output shape and parameter count. */
export function modelSummaryRows(model: tf.LayersModel): ModelSummaryRow[] {
  return model.layers.map((layer) => ({
    layer: layer.name,
    type: layer.getClassName(),
    outputShape: formatShape(layer.outputShape),
    params: layer.countParams(),
  }));
}

/** A plain-text table of the layers followed by total / trainable parameter counts. */
export function modelSummary(model: tf.LayersModel): string {
  const rows = modelSummaryRows(model);
  const header: ModelSummaryRow = { layer: 'Layer', type: 'Type', outputShape: 'Output shape', params: 0 };
  const w = {
    layer: Math.max(header.layer.length, ...rows.map((r) => r.layer.length)),
    type: Math.max(header.type.length, ...rows.map((r) => r.type.length)),
    shape: Math.max(header.outputShape.length, ...rows.map((r) => r.outputShape.length)),
  };
  const line = (a: string, b: string, c: string, d: string) =>
    `${a.padEnd(w.layer)}  ${b.padEnd(w.type)}  ${c.padEnd(w.shape)}  ${d.padStart(10)}`;
  const total = rows.reduce((sum, r) => sum + r.params, 0);
  const trainable = model.trainableWeights.reduce((sum, v) => sum + v.shape.reduce((n: number, d) => n * (d ?? 1), 1), 0);
  return [
    line('Layer', 'Type', 'Output shape', 'Params'),
    '-'.repeat(w.layer + w.type + w.shape + 16),
    ...rows.map((r) => line(r.layer, r.type, r.outputShape, r.params.toLocaleString('en-US'))),
    '-'.repeat(w.layer + w.type + w.shape + 16),
    `Total params: ${total.toLocaleString('en-US')}`,
    `Trainable params: ${trainable.toLocaleString('en-US')}`,
    `Non-trainable params: ${(total - trainable).toLocaleString('en-US')}`,
  ].join('\n');
}
