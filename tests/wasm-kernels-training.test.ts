/** End-to-end: gradients of a small conv net and a short training run agree between wasm (our kernels) and cpu. */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { startWasmBackend } from '../src/accel/wasm/setup';
import { buildModel } from '../src/model';
import { makeTrainStep, runStep } from '../src/train/step';
import { makeRng } from '../src/random';

function randomArray(size: number, seed: number, scale = 1): Float32Array {
  const rng = makeRng(seed);
  return Float32Array.from({ length: size }, () => (rng() * 2 - 1) * scale);
}

const SHAPES = {
  x: [2, 11, 10, 3],
  w1: [3, 3, 3, 4],
  dw: [3, 3, 4, 1],
  pw: [1, 1, 4, 6],
  gamma: [6],
  beta: [6],
  dense: [5 * 5 * 6, 2],
} as const;

type Values = Record<keyof typeof SHAPES, Float32Array>;

function netValues(): Values {
  const out = {} as Values;
  let seed = 100;
  for (const [k, shape] of Object.entries(SHAPES)) {
    out[k as keyof Values] = randomArray(
      (shape as readonly number[]).reduce((a, b) => a * b, 1),
      seed++,
      0.5,
    );
  }
  return out;
}

/** conv2d + relu, separableConv2d, maxPool, batch-norm (batch statistics), dense, sigmoid-sum. */
function gradsOn(backend: 'cpu' | 'wasm', values: Values): Promise<Float32Array[]> {
  return tf.setBackend(backend).then(() => {
    const before = tf.memory().numTensors;
    const ts = Object.fromEntries(
      Object.entries(values).map(([k, v]) => [k, tf.tensor(v, SHAPES[k as keyof Values] as unknown as number[])]),
    ) as Record<keyof Values, tf.Tensor>;
    const f = (x: tf.Tensor, w1: tf.Tensor, dw: tf.Tensor, pw: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, dense: tf.Tensor) => {
      let h = tf.relu(tf.conv2d(x as tf.Tensor4D, w1 as tf.Tensor4D, 1, 'same'));
      h = tf.separableConv2d(h, dw as tf.Tensor4D, pw as tf.Tensor4D, 1, 'same');
      h = tf.maxPool(h, 2, 2, 'valid');
      const { mean, variance } = tf.moments(h, [0, 1, 2]);
      h = tf.batchNorm(h, mean, variance, beta, gamma, 1e-3);
      const logits = tf.matMul(h.reshape([h.shape[0], -1]), dense as tf.Tensor2D);
      return tf.sum(tf.sigmoid(logits));
    };
    const grads = tf.grads(f as never)([ts.x, ts.w1, ts.dw, ts.pw, ts.gamma, ts.beta, ts.dense]);
    const out = grads.map((g) => g.dataSync() as Float32Array);
    tf.dispose(grads);
    tf.dispose(Object.values(ts));
    expect(tf.memory().numTensors).toBe(before);
    return out;
  });
}

function maxRelativeError(a: Float32Array, b: Float32Array): number {
  const scale = Math.max(1e-6, ...Array.from(b, Math.abs));
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / scale);
  return worst;
}

beforeAll(async () => {
  await startWasmBackend();
});

describe('wasm training', () => {
  it('tf.grads of conv2d + separableConv2d + maxPool + batchNorm + dense match the cpu backend', async () => {
    const values = netValues();
    const cpu = await gradsOn('cpu', values);
    const wasm = await gradsOn('wasm', values);
    expect(wasm.length).toBe(cpu.length);
    const errors: number[] = [];
    for (let i = 0; i < cpu.length; i++) errors.push(maxRelativeError(wasm[i], cpu[i]));
    expect(Math.max(...errors), `per-gradient errors ${errors.map((e) => e.toExponential(1)).join(' ')}`).toBeLessThan(1e-4);
  });

  /** Bright blob top-left = class 1, bottom-right = class 0, plus noise: separable by any conv net. */
  function toyBatch(n: number, size: number, seed: number) {
    const rng = makeRng(seed);
    const xs = new Float32Array(n * size * size);
    const ys = new Float32Array(n);
    for (let b = 0; b < n; b++) {
      ys[b] = b % 2;
      const y0 = ys[b] ? 2 : size - 12;
      for (let i = 0; i < size * size; i++) xs[b * size * size + i] = rng() * 0.3;
      for (let y = y0; y < y0 + 10; y++) for (let x = y0; x < y0 + 10; x++) xs[(b * size + y) * size + x] += 0.7;
    }
    return { xs, ys };
  }

  const BATCH = 8;

  async function trainOn(backend: 'cpu' | 'wasm', steps: number): Promise<number[]> {
    await tf.setBackend(backend);
    // The step seeds dropout masks from (seed, step), so both backends draw identical masks and the two curves
    // can be compared step by step.
    return trainSeeded(steps);
  }

  async function trainSeeded(steps: number): Promise<number[]> {
    const size = 32;
    const { xs, ys } = toyBatch(BATCH, size, 5);
    const model = buildModel({ variant: 'small', imageSize: size, seed: 3 });
    const optimizer = tf.train.adam(1e-2);
    const trainStep = makeTrainStep(model, optimizer, { seed: 3 });
    let index = 0;
    const step = (x: tf.Tensor4D, y: tf.Tensor) => runStep(trainStep, x, y, index++);
    const x = tf.tensor4d(xs, [BATCH, size, size, 1]);
    const y = tf.tensor1d(ys);
    step(x, y); // creates optimizer slots
    const before = tf.memory().numTensors;
    // Backend-side buffers too: kernel temporaries and heap aliases must all be released.
    const dataIds = () => tf.engine().backend.numDataIds();
    const idsBefore = dataIds();
    const losses: number[] = [];
    for (let i = 0; i < steps; i++) losses.push(step(x, y));
    expect(tf.memory().numTensors).toBe(before);
    expect(dataIds()).toBe(idsBefore);
    tf.dispose([x, y]);
    optimizer.dispose();
    model.dispose();
    return losses;
  }

  it('the small model learns a separable toy problem to the same loss band on wasm and cpu', async () => {
    const cpu = await trainOn('cpu', 12);
    const wasm = await trainOn('wasm', 12);
    if (process.env.DEBUG_LOSSES) console.log(cpu.map((v) => v.toFixed(3)).join(' '), '|', wasm.map((v) => v.toFixed(3)).join(' '));
    const tail = (l: number[]) => l.slice(-5).reduce((a, b) => a + b, 0) / 5;
    expect(tail(cpu)).toBeLessThan(0.4);
    expect(tail(wasm)).toBeLessThan(0.4);
    expect(wasm[wasm.length - 1]).toBeLessThan(wasm[0] * 0.5);
    // Same seeds and inputs: the curves agree step by step up to float drift.
    expect(Math.max(...cpu.map((l, i) => Math.abs(l - wasm[i])))).toBeLessThan(0.02);
  });
});
