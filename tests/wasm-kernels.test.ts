/**
 * Every wasm training kernel against the cpu backend's reference kernels on random inputs, over
 * strides, paddings, odd sizes, channel multipliers and dilations.
 */
import * as os from 'node:os';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { startWasmBackend, type WasmStart } from '../src/accel/wasm/setup';
import { rowSplitter, useRowSplitter, type RowSplitter } from '../src/accel/wasm/row-jobs';
import { startHelperThread } from '../src/accel/wasm/helper';
import { hasRelaxedSimd, simdModuleBytes, type SimdLoops } from '../src/accel/wasm/simd';
import { ROW_CALL_LOOPS } from '../src/accel/wasm/row-jobs';
import { makeRng } from '../src/random';

type Pad = 'same' | 'valid';

function randomArray(size: number, seed: number): Float32Array {
  const rng = makeRng(seed);
  const out = new Float32Array(size);
  for (let i = 0; i < size; i++) out[i] = rng() * 2 - 1;
  return out;
}

/** A kernel input of `shape` filled with seeded values in [-1, 1). */
function randomInput(shape: number[], seed: number): { shape: number[]; values: Float32Array } {
  return {
    shape,
    values: randomArray(
      shape.reduce((a, b) => a * b),
      seed,
    ),
  };
}

/** Runs one kernel on a backend with fresh tensors (tensors belong to the backend that made them). */
async function runOn(
  backend: 'cpu' | 'wasm',
  kernel: string,
  inputs: Record<string, { shape: number[]; values: Float32Array }>,
  attrs: Record<string, unknown>,
): Promise<{ shape: number[]; values: Float32Array }> {
  await tf.setBackend(backend);
  const before = tf.memory().numTensors;
  const tensors: Record<string, tf.Tensor> = {};
  for (const [name, v] of Object.entries(inputs)) tensors[name] = tf.tensor(v.values, v.shape);
  const out = tf.engine().runKernel(kernel, tensors as never, attrs as never) as tf.Tensor;
  const result = { shape: out.shape, values: out.dataSync() as Float32Array };
  out.dispose();
  Object.values(tensors).forEach((t) => t.dispose());
  expect(tf.memory().numTensors).toBe(before);
  return result;
}

function maxRelativeError(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  for (const v of b) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(scale, 1e-6));
  return worst;
}

async function expectSameOnBoth(
  kernel: string,
  inputs: Record<string, { shape: number[]; values: Float32Array }>,
  attrs: Record<string, unknown>,
  reference?: { shape: number[]; values: Float32Array },
) {
  const expected = reference ?? (await runOn('cpu', kernel, inputs, attrs));
  const actual = await runOn('wasm', kernel, inputs, attrs);
  expect(actual.shape).toEqual(expected.shape);
  expect(maxRelativeError(actual.values, expected.values)).toBeLessThan(1e-4);
}

/**
 * How many values differ (by Object.is: -0 and 0 too). Counted rather than compared with toEqual, whose diff of a
 * few hundred thousand values takes minutes to print when it fails.
 */
function countDifferent(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  return a.filter((v, i) => !Object.is(v, b[i])).length;
}

/** Output spatial size of a conv, as tfjs computes it. */
function outShape(x: number[], f: number[], stride: number, pad: Pad, depthwise: boolean, dilation = 1): number[] {
  const info = tf.backend_util.computeConv2DInfo(
    x as [number, number, number, number],
    f as [number, number, number, number],
    stride,
    dilation,
    pad,
    undefined,
    depthwise,
  );
  return info.outShape;
}

interface Case {
  n: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: [number, number];
  stride: number;
  pad: Pad;
}

const CONV_CASES: Case[] = [
  { n: 2, h: 7, w: 9, ci: 3, co: 5, k: [3, 3], stride: 1, pad: 'same' },
  { n: 1, h: 8, w: 8, ci: 4, co: 6, k: [3, 3], stride: 1, pad: 'valid' },
  { n: 2, h: 9, w: 7, ci: 2, co: 3, k: [3, 3], stride: 2, pad: 'same' },
  { n: 1, h: 10, w: 11, ci: 3, co: 4, k: [3, 3], stride: 2, pad: 'valid' },
  { n: 3, h: 6, w: 5, ci: 5, co: 7, k: [1, 1], stride: 1, pad: 'same' },
  { n: 2, h: 5, w: 7, ci: 8, co: 4, k: [1, 1], stride: 1, pad: 'valid' },
  // co a multiple of 16: the SIMD dense loop, which takes (tap, input channel) rows in pairs; 27 and 9 rows leave
  // one out, and 2 x 128 x 128 positions span many float32 partial sums
  { n: 2, h: 128, w: 128, ci: 4, co: 64, k: [1, 1], stride: 1, pad: 'same' },
  { n: 2, h: 9, w: 10, ci: 3, co: 16, k: [3, 3], stride: 1, pad: 'same' },
  { n: 1, h: 8, w: 7, ci: 1, co: 32, k: [3, 3], stride: 1, pad: 'valid' },
  { n: 2, h: 6, w: 6, ci: 16, co: 16, k: [3, 2], stride: 1, pad: 'same' },
  { n: 1, h: 9, w: 8, ci: 2, co: 3, k: [2, 4], stride: 1, pad: 'same' },
  { n: 1, h: 7, w: 7, ci: 1, co: 2, k: [5, 5], stride: 1, pad: 'same' },
  // one input channel and co a multiple of 4: the SIMD depthwise-loop path
  { n: 2, h: 9, w: 11, ci: 1, co: 8, k: [3, 3], stride: 1, pad: 'same' },
  { n: 3, h: 8, w: 7, ci: 1, co: 4, k: [2, 3], stride: 1, pad: 'valid' },
  { n: 2, h: 5, w: 6, ci: 3, co: 2, k: [2, 2], stride: 3, pad: 'same' },
  // 16 -> 16, 3x3, stride 1, 'same', even sizes: the input gradient by Winograd (winograd.ts); 5 tiles a row (an odd
  // count: the loop's extra tile), 2 (a row's first tile is next to its last); odd height: the direct path
  { n: 2, h: 6, w: 10, ci: 16, co: 16, k: [3, 3], stride: 1, pad: 'same' },
  { n: 1, h: 4, w: 4, ci: 16, co: 16, k: [3, 3], stride: 1, pad: 'same' },
  { n: 1, h: 7, w: 6, ci: 16, co: 16, k: [3, 3], stride: 1, pad: 'same' },
];

let start: WasmStart;

beforeAll(async () => {
  // The same start-up the app uses: our kernels on the (multi-threaded where possible) wasm backend.
  start = await startWasmBackend();
});

describe('Conv2DBackpropFilter / Conv2DBackpropInput on wasm match cpu', () => {
  for (const c of CONV_CASES) {
    const label = `${c.n}x${c.h}x${c.w}x${c.ci} k${c.k.join('x')} ->${c.co} stride ${c.stride} ${c.pad}`;
    const xShape = [c.n, c.h, c.w, c.ci];
    const fShape = [c.k[0], c.k[1], c.ci, c.co];
    const attrs = { strides: [c.stride, c.stride], pad: c.pad, dataFormat: 'NHWC', dimRoundingMode: undefined };

    it(`filter gradient ${label}`, async () => {
      const dyShape = outShape(xShape, fShape, c.stride, c.pad, false);
      await expectSameOnBoth(
        'Conv2DBackpropFilter',
        {
          x: randomInput(xShape, 1),
          dy: randomInput(dyShape, 2),
        },
        { ...attrs, filterShape: fShape },
      );
    });

    it(`input gradient ${label}`, async () => {
      const dyShape = outShape(xShape, fShape, c.stride, c.pad, false);
      await expectSameOnBoth(
        'Conv2DBackpropInput',
        {
          dy: randomInput(dyShape, 3),
          filter: randomInput(fShape, 4),
        },
        { ...attrs, inputShape: xShape },
      );
    });
  }
});

describe('depthwise backprop kernels on wasm match cpu', () => {
  const cases: Array<Case & { m: number }> = [
    { n: 2, h: 7, w: 9, ci: 3, co: 3, m: 1, k: [3, 3], stride: 1, pad: 'same' },
    { n: 1, h: 8, w: 8, ci: 4, co: 4, m: 1, k: [3, 3], stride: 1, pad: 'valid' },
    { n: 2, h: 9, w: 7, ci: 2, co: 4, m: 2, k: [3, 3], stride: 1, pad: 'same' },
    { n: 1, h: 10, w: 11, ci: 3, co: 3, m: 1, k: [3, 3], stride: 2, pad: 'same' },
    { n: 2, h: 9, w: 6, ci: 2, co: 6, m: 3, k: [3, 2], stride: 2, pad: 'valid' },
    { n: 1, h: 6, w: 6, ci: 5, co: 5, m: 1, k: [5, 5], stride: 1, pad: 'same' },
    // channels a multiple of 4 take the SIMD filter-gradient loop; 3x23x19 spans several float32 partials
    { n: 3, h: 23, w: 19, ci: 8, co: 8, m: 1, k: [3, 3], stride: 1, pad: 'same' },
    { n: 2, h: 9, w: 7, ci: 12, co: 12, m: 1, k: [5, 3], stride: 1, pad: 'valid' },
    { n: 1, h: 7, w: 8, ci: 4, co: 4, m: 1, k: [2, 2], stride: 1, pad: 'same' },
  ];
  for (const c of cases) {
    const label = `${c.n}x${c.h}x${c.w}x${c.ci} k${c.k.join('x')} x${c.m} stride ${c.stride} ${c.pad}`;
    const xShape = [c.n, c.h, c.w, c.ci];
    const fShape = [c.k[0], c.k[1], c.ci, c.m];
    const attrs = { strides: [c.stride, c.stride], pad: c.pad, dilations: [1, 1], dimRoundingMode: undefined };

    it(`filter gradient ${label}`, async () => {
      const dyShape = outShape(xShape, fShape, c.stride, c.pad, true);
      await expectSameOnBoth(
        'DepthwiseConv2dNativeBackpropFilter',
        {
          x: randomInput(xShape, 5),
          dy: randomInput(dyShape, 6),
        },
        { ...attrs, filterShape: fShape },
      );
    });

    it(`input gradient ${label}`, async () => {
      const dyShape = outShape(xShape, fShape, c.stride, c.pad, true);
      await expectSameOnBoth(
        'DepthwiseConv2dNativeBackpropInput',
        {
          dy: randomInput(dyShape, 7),
          filter: randomInput(fShape, 8),
        },
        { ...attrs, inputShape: xShape },
      );
    });
  }

  // The cpu backprop kernels ignore dilation (tfjs gradients refuse dilation > 1), so the reference for a
  // dilated filter is the cpu kernel applied to the equivalent zero-inserted filter with dilation 1.
  for (const [pad, ch] of [
    ['same', 3],
    ['valid', 3],
    ['same', 4],
    ['valid', 8],
  ] as Array<[Pad, number]>) {
    it(`dilation 2 matches the zero-inserted filter (${pad}, ${ch} channels)`, async () => {
      const xShape = [1, 9, 8, ch];
      const fShape = [3, 3, ch, 1];
      const bigShape = [5, 5, ch, 1];
      const dyShape = outShape(xShape, fShape, 1, pad, true, 2);
      const x = { shape: xShape, values: randomArray(9 * 8 * ch, 9) };
      const dy = randomInput(dyShape, 10);
      const filter = randomArray(9 * ch, 11);
      const bigFilter = new Float32Array(25 * ch);
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 3; j++) for (let c = 0; c < ch; c++) bigFilter[(2 * i * 5 + 2 * j) * ch + c] = filter[(i * 3 + j) * ch + c];
      const base = { strides: [1, 1], pad, dimRoundingMode: undefined };

      const bigGrad = await runOn(
        'cpu',
        'DepthwiseConv2dNativeBackpropFilter',
        { x, dy },
        { ...base, dilations: [1, 1], filterShape: bigShape },
      );
      const sampled = new Float32Array(9 * ch);
      for (let i = 0; i < 3; i++)
        for (let j = 0; j < 3; j++)
          for (let c = 0; c < ch; c++) sampled[(i * 3 + j) * ch + c] = bigGrad.values[(2 * i * 5 + 2 * j) * ch + c];
      await expectSameOnBoth(
        'DepthwiseConv2dNativeBackpropFilter',
        { x, dy },
        { ...base, dilations: [2, 2], filterShape: fShape },
        { shape: fShape, values: sampled },
      );

      const dx = await runOn(
        'cpu',
        'DepthwiseConv2dNativeBackpropInput',
        { dy, filter: { shape: bigShape, values: bigFilter } },
        { ...base, dilations: [1, 1], inputShape: xShape },
      );
      await expectSameOnBoth(
        'DepthwiseConv2dNativeBackpropInput',
        { dy, filter: { shape: fShape, values: filter } },
        { ...base, dilations: [2, 2], inputShape: xShape },
        dx,
      );
    });
  }
});

describe('MaxPoolGrad on wasm matches cpu (the stock wasm kernel does not)', () => {
  const cases: Array<{ shape: number[]; k: number; s: number; pad: Pad }> = [
    { shape: [1, 4, 4, 1], k: 2, s: 2, pad: 'valid' },
    { shape: [2, 10, 10, 3], k: 2, s: 2, pad: 'valid' },
    { shape: [2, 11, 9, 3], k: 2, s: 2, pad: 'valid' },
    { shape: [1, 7, 6, 2], k: 3, s: 1, pad: 'same' },
    { shape: [2, 9, 9, 4], k: 3, s: 2, pad: 'same' },
    // channels a multiple of 4 take the SIMD 2x2 loop (even and odd sizes)
    { shape: [2, 10, 10, 4], k: 2, s: 2, pad: 'valid' },
    { shape: [2, 11, 9, 8], k: 2, s: 2, pad: 'valid' },
    { shape: [1, 6, 7, 16], k: 2, s: 2, pad: 'valid' },
    // ... on both threads: by rows of windows (an even height), by images (an odd one)
    { shape: [2, 96, 96, 16], k: 2, s: 2, pad: 'valid' },
    { shape: [4, 75, 75, 32], k: 2, s: 2, pad: 'valid' },
  ];
  for (const c of cases) {
    it(`${c.shape.join('x')} pool ${c.k} stride ${c.s} ${c.pad}`, async () => {
      const size = c.shape.reduce((a, b) => a * b);
      const input = randomArray(size, 12);
      // Ties (as after relu) must send the gradient to the same (first) position as cpu does.
      for (let i = 0; i < size; i += 5) input[i] = 0;
      for (let i = 1; i < size; i += 5) input[i] = 0;
      await tf.setBackend('cpu');
      const yShape = tf.tidy(() => tf.maxPool(tf.tensor4d(input, c.shape as [number, number, number, number]), c.k, c.s, c.pad).shape);
      const ySize = yShape.reduce((a, b) => a * b);
      const output = await runOn('cpu', 'MaxPool', { x: { shape: c.shape, values: input } }, { filterSize: c.k, strides: c.s, pad: c.pad });
      await expectSameOnBoth(
        'MaxPoolGrad',
        {
          dy: { shape: yShape, values: randomArray(ySize, 13) },
          input: { shape: c.shape, values: input },
          output,
        },
        { filterSize: [c.k, c.k], strides: [c.s, c.s], pad: c.pad, dimRoundingMode: undefined },
      );
    });
  }
});

describe("MaxPoolGradRelu on wasm: MaxPoolGrad's dx times step(input) and its sums, as cpu computes them", () => {
  const cases: Array<{ shape: number[]; why: string }> = [
    { shape: [2, 10, 10, 4], why: 'the SIMD loop' },
    { shape: [2, 10, 9, 8], why: 'the SIMD loop, an odd last column no window takes' },
    { shape: [2, 96, 96, 16], why: 'the SIMD loop on both threads' },
    { shape: [2, 11, 10, 8], why: 'an odd height: the SIMD loop an image a call' },
    { shape: [4, 75, 75, 32], why: 'an odd height and width, on both threads' },
    { shape: [1, 6, 6, 3], why: 'channels not a multiple of 4: MaxPoolGrad, then the mask' },
  ];
  const attrs = { filterSize: [2, 2], strides: [2, 2], pad: 'valid' };

  /** [dx, sums] on `backend`: the kernel on wasm, MaxPoolGrad times Step and a Sum on cpu. */
  async function maskedPoolGrad(backend: 'cpu' | 'wasm', shape: number[], input: Float32Array, dy: Float32Array) {
    await tf.setBackend(backend);
    return tf.tidy(() => {
      const x = tf.tensor4d(input, shape as [number, number, number, number]);
      const y = tf.maxPool(x, 2, 2, 'valid');
      const dyT = tf.tensor(dy, y.shape);
      if (backend === 'wasm') {
        const [dx, sums] = tf.engine().runKernel('MaxPoolGradRelu', { dy: dyT, input: x, output: y }, attrs as never) as tf.Tensor[];
        return [dx, sums].map((t) => t.dataSync() as Float32Array);
      }
      const dx = tf.mul(tf.engine().runKernel('MaxPoolGrad', { dy: dyT, input: x, output: y }, attrs as never) as tf.Tensor, tf.step(x));
      return [dx, tf.sum(dx, [0, 1, 2])].map((t) => t.dataSync() as Float32Array);
    });
  }

  for (const c of cases) {
    it(`${c.shape.join('x')} (${c.why})`, async () => {
      const size = c.shape.reduce((a, b) => a * b);
      // A ReLU's output: zeros (ties, and no gradient through the mask) among positive values.
      const input = randomArray(size, 14).map((v) => Math.max(v, 0));
      const [h, w, ch] = c.shape.slice(1);
      const dy = randomArray((size / (h * w * ch)) * Math.floor(h / 2) * Math.floor(w / 2) * ch, 15);
      const [wasm, cpu] = [await maskedPoolGrad('wasm', c.shape, input, dy), await maskedPoolGrad('cpu', c.shape, input, dy)];
      expect(countDifferent(wasm[0], cpu[0])).toBe(0);
      expect(maxRelativeError(wasm[1], cpu[1])).toBeLessThan(1e-5);
      expect(cpu[1].some((v) => v !== 0)).toBe(true);
    });
  }
});

describe("BatchNormTrainGradRelu on wasm: BatchNormTrainGrad's dx times step(x) and its sums", () => {
  const cases: Array<{ shape: number[]; why: string }> = [
    { shape: [2, 10, 10, 8], why: 'the SIMD loop' },
    { shape: [2, 96, 96, 16], why: 'the SIMD loop on both threads' },
    { shape: [1, 6, 6, 6], why: 'channels not a multiple of 4: the plain loop, then the mask' },
  ];

  for (const c of cases) {
    it(`${c.shape.join('x')} (${c.why})`, async () => {
      await tf.setBackend('wasm');
      const size = c.shape.reduce((a, b) => a * b);
      const channels = c.shape[3];
      // x is a ReLU's output: zeros (masked out) among positive values.
      const x = randomArray(size, 16).map((v) => Math.max(v, 0));
      const [fused, plain] = tf.tidy(() => {
        const xT = tf.tensor(x, c.shape);
        const inputs = {
          dy: tf.tensor(randomArray(size, 17), c.shape),
          x: xT,
          mean: tf.mean(xT, [0, 1, 2]),
          variance: tf.moments(xT, [0, 1, 2]).variance,
          scale: tf.tensor1d(randomArray(channels, 18)),
        };
        const run = (kernel: string) =>
          (tf.engine().runKernel(kernel, inputs, { varianceEpsilon: 0.001 }) as tf.Tensor[]).map((t) => t.dataSync() as Float32Array);
        return [run('BatchNormTrainGradRelu'), run('BatchNormTrainGrad')];
      });
      const masked = plain[0].map((v, i) => v * (x[i] > 0 ? 1 : 0)); // as cpu: dx * step(x), -0 where dx < 0
      const sums = new Float32Array(channels);
      masked.forEach((v, i) => (sums[i % channels] += v));
      expect(countDifferent(fused[0], masked)).toBe(0);
      expect(fused.slice(1, 3)).toEqual(plain.slice(1, 3)); // dscale, doffset
      expect(maxRelativeError(fused[3], sums)).toBeLessThan(1e-5);
      expect(masked.some((v) => v === 0) && masked.some((v) => v !== 0)).toBe(true);
    });
  }
});

describe('fast replacements (Tile, Sum, Mean, BatchMatMul) on wasm match cpu', () => {
  const tileCases: Array<{ shape: number[]; reps: number[] }> = [
    { shape: [1, 1, 1, 5], reps: [3, 4, 2, 1] },
    { shape: [2, 3], reps: [2, 3] },
    { shape: [3, 1, 2], reps: [1, 7, 1] },
    { shape: [4], reps: [1] },
  ];
  for (const c of tileCases) {
    it(`Tile ${c.shape.join('x')} by ${c.reps.join('x')}`, async () => {
      await expectSameOnBoth(
        'Tile',
        {
          x: {
            shape: c.shape,
            values: randomArray(
              c.shape.reduce((a, b) => a * b),
              20,
            ),
          },
        },
        { reps: c.reps },
      );
    });
  }

  const reduceCases: Array<{ shape: number[]; axis: number | number[]; keepDims: boolean }> = [
    { shape: [2, 5, 4, 3], axis: [0, 1, 2], keepDims: false },
    { shape: [2, 5, 4, 3], axis: [2, 0, 1], keepDims: true },
    { shape: [6, 7], axis: 0, keepDims: false },
    { shape: [6, 7], axis: [0, 1], keepDims: false },
    { shape: [6, 7], axis: 1, keepDims: false },
    { shape: [3, 4, 5], axis: [1], keepDims: true },
    { shape: [3, 4, 5], axis: -1, keepDims: false },
    // channel counts that are multiples of 4 take the SIMD path; 37*31 rows span several float32 partials
    { shape: [2, 37, 31, 8], axis: [0, 1, 2], keepDims: true },
    { shape: [3, 5, 5, 16], axis: [0, 1, 2], keepDims: false },
    { shape: [1100, 4], axis: 0, keepDims: false },
  ];
  for (const kernel of ['Sum', 'Mean']) {
    for (const c of reduceCases) {
      it(`${kernel} ${c.shape.join('x')} over ${JSON.stringify(c.axis)} keepDims ${c.keepDims}`, async () => {
        await expectSameOnBoth(
          kernel,
          {
            x: {
              shape: c.shape,
              values: randomArray(
                c.shape.reduce((a, b) => a * b),
                21,
              ),
            },
          },
          { axis: c.axis, keepDims: c.keepDims },
        );
      });
    }
  }

  const mulCases: Array<{ a: number[]; b: number[] }> = [
    { a: [1, 1, 1, 8], b: [2, 5, 3, 8] }, // per-channel vector first: SIMD path
    { a: [3, 4, 12], b: [12] }, // vector second
    { a: [2, 3, 4, 6], b: [6] }, // channels not a multiple of 4: stock
    { a: [2, 3, 4, 8], b: [2, 3, 4, 8] }, // same shape: stock
    { a: [4, 1, 8], b: [1, 5, 8] }, // a real two-sided broadcast: stock
  ];
  for (const kernel of ['Multiply', 'Add', 'Sub']) {
    for (const c of mulCases) {
      for (const [a, b] of [
        [c.a, c.b],
        [c.b, c.a],
      ]) {
        it(`${kernel} ${a.join('x')} with ${b.join('x')}`, async () => {
          await expectSameOnBoth(
            kernel,
            {
              a: {
                shape: a,
                values: randomArray(
                  a.reduce((x, y) => x * y),
                  24,
                ),
              },
              b: {
                shape: b,
                values: randomArray(
                  b.reduce((x, y) => x * y),
                  25,
                ),
              },
            },
            {},
          );
        });
      }
    }
  }

  const bnCases: Array<{ shape: number[]; vector: number[]; scale: boolean; offset: boolean }> = [
    { shape: [2, 5, 3, 8], vector: [8], scale: true, offset: true }, // SIMD path
    { shape: [3, 4, 12], vector: [1, 1, 12], scale: false, offset: true },
    { shape: [2, 3, 3, 8], vector: [8], scale: true, offset: false },
    { shape: [2, 3, 3, 6], vector: [6], scale: true, offset: true }, // channels not a multiple of 4: stock
  ];
  for (const c of bnCases) {
    it(`FusedBatchNorm ${c.shape.join('x')} scale ${c.scale} offset ${c.offset}`, async () => {
      const n = c.vector.reduce((x, y) => x * y);
      const variance = randomArray(n, 28).map((v) => Math.abs(v) + 0.1);
      const inputs: Record<string, { shape: number[]; values: Float32Array }> = {
        x: {
          shape: c.shape,
          values: randomArray(
            c.shape.reduce((x, y) => x * y),
            26,
          ),
        },
        mean: { shape: c.vector, values: randomArray(n, 27) },
        variance: { shape: c.vector, values: variance },
      };
      if (c.offset) inputs.offset = { shape: c.vector, values: randomArray(n, 29) };
      if (c.scale) inputs.scale = { shape: c.vector, values: randomArray(n, 30) };
      await expectSameOnBoth('FusedBatchNorm', inputs, { varianceEpsilon: 1e-3 });
    });
  }

  const mmCases: Array<{ a: number[]; b: number[]; ta: boolean; tb: boolean }> = [
    { a: [1, 7, 5], b: [1, 7, 3], ta: true, tb: false },
    { a: [1, 4, 6], b: [1, 5, 6], ta: false, tb: true },
    { a: [2, 6, 4], b: [2, 5, 6], ta: true, tb: true },
    { a: [1, 3, 4], b: [1, 4, 2], ta: false, tb: false },
    { a: [1, 3, 8], b: [1, 40, 8], ta: false, tb: true }, // small a: computed as (b·aᵀ)ᵀ
    { a: [3, 8], b: [40, 8], ta: false, tb: true }, // rank 2, as tf.matMul may pass it
    // Small a times large b, no transposes: a 1x1 filter gradient over k laid as rows (a dense layer's forward pass).
    { a: [6, 64], b: [64, 32], ta: false, tb: false },
    { a: [1, 4, 96], b: [1, 96, 48], ta: false, tb: false },
    { a: [6, 67], b: [67, 32], ta: false, tb: false }, // k prime: no row width, the stock kernel
    { a: [1, 37, 45], b: [1, 40, 45], ta: false, tb: true }, // transposes in tiles, with partial tiles
  ];
  for (const c of mmCases) {
    it(`BatchMatMul ${c.a.join('x')}${c.ta ? 'ᵀ' : ''} @ ${c.b.join('x')}${c.tb ? 'ᵀ' : ''}`, async () => {
      await expectSameOnBoth(
        'BatchMatMul',
        {
          a: {
            shape: c.a,
            values: randomArray(
              c.a.reduce((x, y) => x * y),
              22,
            ),
          },
          b: {
            shape: c.b,
            values: randomArray(
              c.b.reduce((x, y) => x * y),
              23,
            ),
          },
        },
        { transposeA: c.ta, transposeB: c.tb },
      );
    });
  }
});

describe('Cast on wasm', () => {
  it('to the same dtype shares data without leaking; to another dtype converts', async () => {
    await tf.setBackend('wasm');
    const before = tf.memory().numTensors;
    const x = tf.tensor1d([1.5, -2, 3]);
    const same = tf.cast(x, 'float32');
    const ints = tf.cast(x, 'int32');
    x.dispose();
    expect(Array.from(same.dataSync())).toEqual([1.5, -2, 3]);
    expect(ints.dtype).toBe('int32');
    expect(Array.from(ints.dataSync())).toEqual([1, -2, 3]);
    tf.dispose([same, ints]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('Identity on wasm', () => {
  it('shares data without leaking and survives disposal of its source', async () => {
    await tf.setBackend('wasm');
    const before = tf.memory().numTensors;
    const x = tf.tensor1d([1, 2, 3]);
    const y = tf.engine().runKernel('Identity', { x }) as tf.Tensor;
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
    y.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe("ReLU's fused gradient on wasm (FusedReluGrad)", () => {
  // 4 x 7 + 3 values: the SIMD loop takes the first 28, the plain loop the last 3; NaN must stay NaN, and -0, 0 and
  // negatives get no gradient, exactly as cpu's Step and Multiply give.
  const special = [NaN, -0, 0, -1e-30, 1e-30, -2, 3, Infinity, -Infinity];
  const x = Float32Array.from({ length: 31 }, (_, i) => (i < special.length ? special[i] : Math.sin(i * 1.7) * 2));
  const x0 = Float32Array.from(x);
  x0[29] = NaN; // in the tail too
  const dy = Float32Array.from({ length: 31 }, (_, i) => Math.cos(i * 0.9) * 3);

  async function reluGradOn(backend: 'cpu' | 'wasm', input: Float32Array) {
    await tf.setBackend(backend);
    const [xt, dyt] = [tf.tensor1d(input), tf.tensor1d(dy)];
    let grad = new Float32Array(0);
    const { kernelNames } = await tf.profile(() => {
      const g = tf.grad((t: tf.Tensor) => tf.relu(t))(xt, dyt);
      grad = g.dataSync() as Float32Array;
      g.dispose();
    });
    tf.dispose([xt, dyt]);
    return { grad, kernelNames };
  }

  it.each([
    ['special values in the SIMD part', x],
    ['a NaN in the plain-loop tail', x0],
  ])('%s: the same values as cpu, bit for bit', async (_label, input) => {
    const wasm = await reluGradOn('wasm', input);
    const cpu = await reluGradOn('cpu', input);
    expect(wasm.kernelNames).toContain('FusedReluGrad');
    expect(cpu.kernelNames).not.toContain('FusedReluGrad');
    expect(Array.from(wasm.grad).map(String)).toEqual(Array.from(cpu.grad).map(String));
    expect(Array.from(wasm.grad, (v) => Object.is(v, -0))).toEqual(Array.from(cpu.grad, (v) => Object.is(v, -0)));
  });
});

describe('the helper thread takes half of a large row loop (row-jobs.ts RowCall)', () => {
  // 2 x 96 x 96 x 16: 294912 values, above the split threshold; 192 rows of pixels for the ReLU mask's sums (partial
  // sums per thread), 96 output rows for the 2x2 max-pool gradient (one row per call, nothing summed).
  const shape = [2, 96, 96, 16];
  const dy = randomInput(shape, 41);
  const y = randomInput(shape, 42);
  const pooledDy = randomInput([2, 48, 48, 16], 43);
  const poolAttrs = { filterSize: [2, 2], strides: [2, 2], pad: 'valid', dimRoundingMode: undefined };

  /** MaxPoolGrad of pooledDy through y's 2x2 max pool, on the active backend. */
  const poolGradient = (yT: tf.Tensor) =>
    tf
      .engine()
      .runKernel(
        'MaxPoolGrad',
        { dy: tf.tensor(pooledDy.values, pooledDy.shape), input: yT, output: tf.maxPool(yT as tf.Tensor4D, 2, 2, 'valid') },
        poolAttrs as never,
      ) as tf.Tensor;

  /** ReluGradChannelSums' [masked, sums] and MaxPoolGrad's dx on wasm, with the row splitter `splitter`. */
  async function rowLoops(splitter: RowSplitter | undefined): Promise<Float32Array[]> {
    await tf.setBackend('wasm');
    const helper = rowSplitter();
    useRowSplitter(splitter);
    try {
      return tf.tidy(() => {
        const [dyT, yT] = [tf.tensor(dy.values, shape), tf.tensor(y.values, shape)];
        const [masked, sums] = tf.engine().runKernel('ReluGradChannelSums', { dy: dyT, y: yT }) as tf.Tensor[];
        return [masked, sums, poolGradient(yT)].map((t) => t.dataSync() as Float32Array);
      });
    } finally {
      if (rowSplitter() === splitter) useRowSplitter(helper);
    }
  }

  async function onCpu(): Promise<Float32Array[]> {
    await tf.setBackend('cpu');
    return tf.tidy(() => {
      const [dyT, yT] = [tf.tensor(dy.values, shape), tf.tensor(y.values, shape)];
      const masked = tf.mul(dyT, tf.step(yT));
      return [masked, tf.sum(masked, [0, 1, 2]), poolGradient(yT)].map((t) => t.dataSync() as Float32Array);
    });
  }

  it.skipIf(os.cpus().length < 2)('runs ReLU-mask sums and max-pool rows on both threads, as one thread and cpu do', async () => {
    expect(start.helperThread).toBe(true);
    const helper = rowSplitter()!;
    let jobs = 0;
    const counting: RowSplitter = { start: (...args) => (jobs++, helper.start(...args)), finish: () => helper.finish() };
    const warn = vi.spyOn(console, 'warn');
    const split = await rowLoops(counting);
    expect(jobs).toBe(2);
    expect(warn).not.toHaveBeenCalled();
    warn.mockRestore();
    const alone = await rowLoops(undefined);
    const cpu = await onCpu();
    expect(Array.from(split[0])).toEqual(Array.from(alone[0])); // the mask, element for element
    expect(Array.from(split[2])).toEqual(Array.from(alone[2])); // max-pool rows
    expect(maxRelativeError(split[1], alone[1])).toBeLessThan(1e-6); // sums, added in another order
    expect(Array.from(split[0])).toEqual(Array.from(cpu[0]));
    expect(maxRelativeError(split[1], cpu[1])).toBeLessThan(1e-5);
    expect(Array.from(split[2])).toEqual(Array.from(cpu[2]));
  });

  it('a helper that fails on a row loop leaves the results whole, with a warning, and is not asked again', async () => {
    const helper = rowSplitter();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    let jobs = 0;
    const failing: RowSplitter = {
      start: () => (jobs++, true),
      finish: () => {
        throw new Error('the wasm helper thread failed on a job');
      },
    };
    try {
      const results = await rowLoops(failing);
      const cpu = await onCpu();
      expect(jobs).toBe(1);
      expect(rowSplitter()).toBeUndefined();
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/helper thread failed.*continuing on one thread/));
      expect(Array.from(results[0])).toEqual(Array.from(cpu[0]));
      expect(maxRelativeError(results[1], cpu[1])).toBeLessThan(1e-5);
      expect(Array.from(results[2])).toEqual(Array.from(cpu[2]));
    } finally {
      warn.mockRestore();
      useRowSplitter(helper);
    }
  });
});

describe('the helper thread takes half of a large filter gradient', () => {
  // 2 x 96 x 96 x 16 -> 32, 3x3: 192 rows of 96 pixels and 4608 sums per pixel (16 -> 16, block 1's, is Winograd's)
  const xShape = [2, 96, 96, 16];
  const attrs = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined, filterShape: [3, 3, 16, 32] };
  const inputs = { x: randomInput(xShape, 31), dy: randomInput([2, 96, 96, 32], 32) };

  it.skipIf(os.cpus().length < 2)('runs where the backend has two threads, and matches cpu and one thread', async () => {
    expect(start.threads).toBeGreaterThan(1);
    expect(start.helperThread).toBe(true);
    const helper = rowSplitter()!;
    let jobs = 0;
    const counting: RowSplitter = {
      start: (...args) => (jobs++, helper.start(...args)),
      finish: () => helper.finish(),
    };
    const cpu = await runOn('cpu', 'Conv2DBackpropFilter', inputs, attrs);
    try {
      useRowSplitter(counting);
      const split = await runOn('wasm', 'Conv2DBackpropFilter', inputs, attrs);
      expect(jobs).toBe(1);
      useRowSplitter(undefined);
      const alone = await runOn('wasm', 'Conv2DBackpropFilter', inputs, attrs);
      expect(jobs).toBe(1);
      expect(maxRelativeError(split.values, cpu.values)).toBeLessThan(1e-5);
      expect(maxRelativeError(alone.values, cpu.values)).toBeLessThan(1e-5);
      expect(maxRelativeError(split.values, alone.values)).toBeLessThan(1e-6);
    } finally {
      useRowSplitter(helper);
    }
  });

  it('a helper that fails leaves the result whole: its rows are redone here, with a warning, and it is not asked again', async () => {
    const helper = rowSplitter();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    let jobs = 0;
    const failing: RowSplitter = {
      start: () => (jobs++, true), // takes the rows, computes nothing
      finish: () => {
        throw new Error('the wasm helper thread failed on a filter-gradient job');
      },
    };
    try {
      useRowSplitter(failing);
      const cpu = await runOn('cpu', 'Conv2DBackpropFilter', inputs, attrs);
      const first = await runOn('wasm', 'Conv2DBackpropFilter', inputs, attrs);
      const second = await runOn('wasm', 'Conv2DBackpropFilter', inputs, attrs);
      expect(maxRelativeError(first.values, cpu.values)).toBeLessThan(1e-5);
      expect(maxRelativeError(second.values, cpu.values)).toBeLessThan(1e-5);
      expect(jobs).toBe(1);
      expect(rowSplitter()).toBeUndefined();
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/helper thread failed.*continuing on one thread/));
    } finally {
      warn.mockRestore();
      useRowSplitter(helper);
    }
  });

  it('is not started on a memory that is not shared, and says why', () => {
    expect(startHelperThread(new WebAssembly.Memory({ initial: 1 }))).toBe('the wasm memory is not shared');
  });
});

describe("block 1's 16 -> 16 convolution by Winograd on wasm (FusedConv2D, Conv2DBackpropInput)", () => {
  /** Runs `kernel` on wasm with a splitter that records which row loops the helper was given, and on cpu. */
  async function withLoopsSeen(
    kernel: string,
    inputs: Record<string, { shape: number[]; values: Float32Array }>,
    attrs: Record<string, unknown>,
  ) {
    const helper = rowSplitter();
    const loops: string[] = [];
    const seeing: RowSplitter = {
      start: (kind, fields) => (loops.push(ROW_CALL_LOOPS[fields[0]] ?? `job ${kind}`), helper ? helper.start(kind, fields) : false),
      finish: () => helper?.finish(),
    };
    try {
      useRowSplitter(seeing);
      const wasm = await runOn('wasm', kernel, inputs, attrs);
      const cpu = await runOn('cpu', kernel, inputs, attrs);
      return { wasm, cpu, loops };
    } finally {
      useRowSplitter(helper);
    }
  }
  const conv = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC', dilations: [1, 1], dimRoundingMode: undefined };

  // 2 x 32 x 30: large enough to be split with the helper thread (15 tiles a row: odd, with the extra tile)
  it.each([
    { activation: 'relu', bias: true },
    { activation: 'linear', bias: true },
    { activation: 'relu', bias: false },
  ])("the forward pass ($activation, bias $bias) gives cpu's output, by the Winograd loop", async ({ activation, bias }) => {
    const inputs = {
      x: randomInput([2, 32, 30, 16], 51),
      filter: randomInput([3, 3, 16, 16], 52),
      ...(bias ? { bias: randomInput([16], 53) } : {}),
    };
    const { wasm, cpu, loops } = await withLoopsSeen('FusedConv2D', inputs, { ...conv, activation });
    expect(maxRelativeError(wasm.values, cpu.values)).toBeLessThan(1e-5);
    if (activation === 'relu') expect(cpu.values.some((v) => v === 0)).toBe(true);
    expect(loops).toEqual([activation === 'relu' ? 'winogradrelu' : 'winograd']);
  });

  it("the input gradient of the same convolution gives cpu's, by the Winograd loop", async () => {
    const inputs = { dy: randomInput([2, 32, 30, 16], 54), filter: randomInput([3, 3, 16, 16], 55) };
    const { wasm, cpu, loops } = await withLoopsSeen('Conv2DBackpropInput', inputs, { ...conv, inputShape: [2, 32, 30, 16] });
    expect(maxRelativeError(wasm.values, cpu.values)).toBeLessThan(1e-5);
    expect(loops).toEqual(['winograd']);
  });

  it("the filter gradient gives cpu's, by the Winograd loop", async () => {
    const inputs = { x: randomInput([2, 32, 30, 16], 62), dy: randomInput([2, 32, 30, 16], 63) };
    const { wasm, cpu, loops } = await withLoopsSeen('Conv2DBackpropFilter', inputs, { ...conv, filterShape: [3, 3, 16, 16] });
    expect(maxRelativeError(wasm.values, cpu.values)).toBeLessThan(1e-5);
    expect(loops).toEqual(['winogradfilter']);
  });

  it('keeps NaN through its ReLU, as the cpu backend does', async () => {
    const x = randomInput([1, 4, 4, 16], 56);
    x.values[5 * 16 + 3] = NaN; // pixel (1, 1): every output pixel's window but the far corner's holds it
    const inputs = { x, filter: randomInput([3, 3, 16, 16], 57), bias: randomInput([16], 58) };
    const wasm = await runOn('wasm', 'FusedConv2D', inputs, { ...conv, activation: 'relu' });
    const cpu = await runOn('cpu', 'FusedConv2D', inputs, { ...conv, activation: 'relu' });
    expect(Array.from(wasm.values, Number.isNaN)).toEqual(Array.from(cpu.values, Number.isNaN));
    expect(wasm.values.some(Number.isNaN)).toBe(true);
  });

  it.each([
    { why: 'another channel count', x: [1, 6, 6, 8], filter: [3, 3, 8, 16] },
    { why: 'an odd width', x: [1, 6, 7, 16], filter: [3, 3, 16, 16] },
    { why: 'a 5x5 window', x: [1, 6, 6, 16], filter: [5, 5, 16, 16] },
  ])("leaves $why to XNNPACK, with cpu's result", async ({ x, filter }) => {
    const inputs = { x: randomInput(x, 59), filter: randomInput(filter, 60), bias: randomInput([16], 61) };
    const { wasm, cpu, loops } = await withLoopsSeen('FusedConv2D', inputs, { ...conv, activation: 'relu' });
    expect(maxRelativeError(wasm.values, cpu.values)).toBeLessThan(1e-5);
    expect(loops).not.toContain('winogradrelu');
  });
});

describe("the filter gradient's loop with and without relaxed SIMD's fused multiply-add", () => {
  // convgrad directly, on a memory of its own: acc[r, o] += x[offset_r + p * ci] * dy[p, o], rows in pairs, 16 outputs
  // at a time. 4 rows (taps at pixel shifts 0..3) of a 3-channel x, 32 outputs, 40 pixels.
  const [ci, co, rows, n] = [3, 32, 4, 40];
  const x = randomArray((n + rows) * ci, 41);
  const dy = randomArray(n * co, 42);
  const offsets = Int32Array.from({ length: rows }, (_, r) => 4 * (r * ci + (r % ci)));
  const expected = new Float64Array(rows * co).fill(0.5); // acc starts at 0.5: convgrad adds into it
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < co; o++) for (let p = 0; p < n; p++) expected[r * co + o] += x[offsets[r] / 4 + p * ci] * dy[p * co + o];

  function runConvgrad(fused: boolean): Float32Array {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const loops = new WebAssembly.Instance(new WebAssembly.Module(simdModuleBytes(false, fused)), { env: { memory } })
      .exports as unknown as SimdLoops;
    const [xAt, dyAt, accAt, offsetsAt] = [0, 4096, 16384, 32768];
    new Float32Array(memory.buffer, xAt, x.length).set(x);
    new Float32Array(memory.buffer, dyAt, dy.length).set(dy);
    new Float32Array(memory.buffer, accAt, rows * co).fill(0.5);
    new Int32Array(memory.buffer, offsetsAt, rows).set(offsets);
    loops.convgrad(xAt, dyAt, accAt, n, 4 * ci, 4 * co, offsetsAt, rows);
    return new Float32Array(memory.buffer, accAt, rows * co).slice();
  }

  it('the plain loop (multiply, then add) matches a float64 reference', () => {
    expect(maxRelativeError(runConvgrad(false), Float32Array.from(expected))).toBeLessThan(1e-6);
  });

  it('the fused loop matches it too, and the backend started with it (Node 20 behind the V8 flag setup.ts sets)', () => {
    expect(start.fusedMultiplyAdd).toBe(true);
    expect(hasRelaxedSimd()).toBe(true);
    expect(maxRelativeError(runConvgrad(true), Float32Array.from(expected))).toBeLessThan(1e-6);
  });

  it('PNEUMO_WASM_FMA=0 keeps the plain loop', () => {
    vi.stubEnv('PNEUMO_WASM_FMA', '0');
    try {
      expect(hasRelaxedSimd()).toBe(false);
      expect(simdModuleBytes(false)).toEqual(simdModuleBytes(false, false));
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe("Adam's fused update on wasm (FusedAdam)", () => {
  it("matches tfjs's own Adam on cpu over several steps, SIMD body and odd tail, and runs the fused kernel", async () => {
    const rng = makeRng(24);
    const values = [randomArray(4099, 51), randomArray(7, 52)]; // 4096 + 3 in the plain-loop tail; 7 = 4 + 3
    const targets = values.map((v) => Float32Array.from(v, () => rng() * 2 - 1));
    const run = async (backend: 'cpu' | 'wasm') => {
      await tf.setBackend(backend);
      const vars = values.map((v) => tf.variable(tf.tensor(v)));
      const goal = targets.map((t) => tf.tensor(t));
      const optimizer = tf.train.adam(0.05);
      const { kernelNames } = await tf.profile(() => {
        for (let step = 0; step < 4; step++) {
          optimizer.minimize(() => tf.addN(vars.map((v, i) => tf.sum(tf.square(tf.sub(v, goal[i]))))), false, vars);
        }
      });
      const out = vars.map((v) => v.dataSync() as Float32Array);
      tf.dispose([...vars, ...goal]);
      optimizer.dispose();
      return { out, kernelNames };
    };
    const wasm = await run('wasm');
    const cpu = await run('cpu');
    expect(wasm.kernelNames).toContain('FusedAdam');
    expect(cpu.kernelNames).not.toContain('FusedAdam');
    wasm.out.forEach((w, i) => expect(maxRelativeError(w, cpu.out[i])).toBeLessThan(1e-5));
    expect(maxRelativeError(wasm.out[0], values[0])).toBeGreaterThan(1e-3); // the variables did move
  });
});
