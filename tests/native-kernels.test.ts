/**
 * The oneDNN `native` backend against tfjs's reference `cpu` backend, kernel by kernel.
 * Skipped (visibly) when the addon is not built: `apt-get install libdnnl-dev && npm run build:native`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { augmentBatch, sampleAugmentParams, transformFor, warpBilinearNearest } from '../src/augment';
import { describeConvChoices, loadNativeAddon, summarizeConvChoices, tryRegisterNative, type NativeAddon } from '../src/accel/onednn';
import { STANDARDIZE_IMAGES, standardizeImages } from '../src/model/normalization';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[native tests skipped] ${skipWhy}`);

type Rng = () => number;

function randomArray(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng() * 2 - 1;
  return out;
}

/** Runs fn on both backends with the same host inputs; returns [native, cpu] outputs as arrays. */
async function onBoth(
  inputs: Array<{ shape: number[]; data: Float32Array }>,
  fn: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<[Float32Array[], Float32Array[]]> {
  const run = async (backend: string): Promise<Float32Array[]> => {
    await tf.setBackend(backend);
    const before = tf.memory().numTensors;
    const xs = inputs.map((i) => tf.tensor(i.data, i.shape));
    const out = tf.tidy(() => fn(...xs));
    const outs = Array.isArray(out) ? out : [out];
    const arrays = await Promise.all(outs.map(async (o) => (await o.data()) as Float32Array));
    tf.dispose([...xs, ...outs]);
    expect(tf.memory().numTensors).toBe(before);
    return arrays;
  };
  const native = await run('native');
  const cpu = await run('cpu');
  return [native, cpu];
}

/** Largest |a-b| relative to the largest |b| (a scale-aware relative error). */
function relError(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let scale = 1e-6;
  let worst = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / scale;
}

async function expectSame(
  inputs: Array<{ shape: number[]; data: Float32Array }>,
  fn: (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
  tol = 1e-4,
): Promise<void> {
  const [native, cpu] = await onBoth(inputs, fn);
  expect(native.length).toBe(cpu.length);
  native.forEach((n, i) => {
    expect(Number.isFinite(relError(n, cpu[i]))).toBe(true);
    expect(relError(n, cpu[i])).toBeLessThanOrEqual(tol);
  });
}

interface ConvCase {
  batch: number;
  side: [number, number];
  inC: number;
  outC: number; // depth multiplier for depthwise cases
  k: [number, number];
  stride: 1 | 2;
  pad: 'same' | 'valid';
  dilation?: number;
}

const convCases: ConvCase[] = [
  { batch: 1, side: [7, 7], inC: 1, outC: 4, k: [3, 3], stride: 1, pad: 'same' },
  { batch: 3, side: [9, 8], inC: 3, outC: 5, k: [3, 3], stride: 2, pad: 'same' },
  { batch: 2, side: [11, 13], inC: 4, outC: 6, k: [3, 2], stride: 2, pad: 'valid' },
  { batch: 2, side: [6, 6], inC: 8, outC: 16, k: [1, 1], stride: 1, pad: 'valid' },
  { batch: 1, side: [10, 9], inC: 5, outC: 3, k: [5, 5], stride: 1, pad: 'valid' },
  { batch: 2, side: [9, 9], inC: 3, outC: 2, k: [3, 3], stride: 1, pad: 'same', dilation: 2 },
  // 1 -> 16 channels, 3x3: the seed model's first layer, written out in conv.cc (with padding, and with stride 2).
  { batch: 2, side: [11, 9], inC: 1, outC: 16, k: [3, 3], stride: 1, pad: 'same' },
  { batch: 2, side: [10, 13], inC: 1, outC: 16, k: [3, 3], stride: 2, pad: 'same' },
  { batch: 1, side: [9, 9], inC: 1, outC: 16, k: [3, 3], stride: 1, pad: 'same', dilation: 2 }, // oneDNN's
  // 16 -> 16 channels, 3x3, stride 1: the shape that takes Winograd on AVX-512 CPUs (accel/onednn/src/conv.cc).
  { batch: 2, side: [10, 13], inC: 16, outC: 16, k: [3, 3], stride: 1, pad: 'same' },
  { batch: 3, side: [9, 7], inC: 16, outC: 16, k: [3, 3], stride: 1, pad: 'valid' },
];

function convInputs(rng: Rng, c: ConvCase, depthwise: boolean) {
  const x = { shape: [c.batch, c.side[0], c.side[1], c.inC], data: new Float32Array(0) };
  x.data = randomArray(
    rng,
    x.shape.reduce((a, b) => a * b),
  );
  const wShape = [c.k[0], c.k[1], c.inC, depthwise ? c.outC : c.outC];
  const w = {
    shape: wShape,
    data: randomArray(
      rng,
      wShape.reduce((a, b) => a * b),
    ),
  };
  const bShape = [depthwise ? c.inC * c.outC : c.outC];
  const b = { shape: bShape, data: randomArray(rng, bShape[0]) };
  return { x, w, b };
}

describe.skipIf(Boolean(skipWhy))('native backend kernels match cpu', () => {
  beforeAll(async () => {
    const reg = tryRegisterNative();
    expect(reg).toMatchObject({ ok: true });
    await tf.setBackend('native');
    expect(tf.getBackend()).toBe('native');
  });

  it('registers every cpu kernel under native', () => {
    const cpu = new Set(tf.getKernelsForBackend('cpu').map((k) => k.kernelName));
    const native = new Set(tf.getKernelsForBackend('native').map((k) => k.kernelName));
    for (const name of cpu) expect(native.has(name)).toBe(true);
  });

  /** Forward, fused bias+relu and both gradients of one case against cpu. */
  async function expectConvMatchesCpu(c: ConvCase): Promise<void> {
    const rng = makeRng(11);
    const { x, w, b } = convInputs(rng, c, false);
    const dil = c.dilation ?? 1;
    await expectSame([x, w], (xt, wt) => tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, c.stride, c.pad, 'NHWC', dil));
    await expectSame([x, w, b], (xt, wt, bt) =>
      tf.fused.conv2d({
        x: xt as tf.Tensor4D,
        filter: wt as tf.Tensor4D,
        bias: bt,
        strides: c.stride,
        pad: c.pad,
        dilations: dil,
        activation: 'relu',
      }),
    );
    if (dil === 1) {
      // Gradients through a non-linear loss so dy is not constant.
      await expectSame([x, w, b], (xt, wt, bt) => {
        const loss = (xx: tf.Tensor, ww: tf.Tensor) =>
          tf.fused
            .conv2d({ x: xx as tf.Tensor4D, filter: ww as tf.Tensor4D, bias: bt, strides: c.stride, pad: c.pad, activation: 'relu' })
            .square()
            .sum();
        return tf.grads(loss)([xt, wt]);
      });
    }
  }

  it.each(convCases)('conv2d forward, fused relu+bias, and both gradients: %o', expectConvMatchesCpu);

  const winogradCases = convCases.filter((c) => c.inC === 16 && c.outC === 16 && c.k[0] === 3 && c.k[1] === 3);

  it('16 -> 16 3x3 convs match cpu with every algorithm, and auto keeps a Winograd only where it timed clearly faster', async () => {
    const { addon } = loaded as { addon: NativeAddon };
    expect(winogradCases.length).toBe(2);
    try {
      // 'winograd2x2' and 'winograd4x4' run ours, F(2x2, 3x3) and F(4x4, 3x3) (forward and both gradients), on any CPU.
      for (const mode of ['direct', 'winograd', 'winograd2x2', 'winograd4x4', 'auto'] as const) {
        addon.setConvAlgorithm(mode);
        for (const c of winogradCases) await expectConvMatchesCpu(c);
        if (mode !== 'auto') expect(addon.convAlgorithmChoices()).toEqual([]);
      }
      const choices = addon.convAlgorithmChoices();
      // Each case's forward (plain and fused bias+relu share a geometry), backward data and backward weights.
      expect(new Set(choices.map((ch) => ch.direction))).toEqual(new Set(['forward', 'backwardData', 'backwardWeights']));
      expect(choices.length).toBe(3 * winogradCases.length);
      for (const ch of choices) {
        const [, , , inC, , , outC, kh, kw] = ch.geometry;
        expect([inC, outC, kh, kw]).toEqual([16, 16, 3, 3]);
        expect(ch.directMs).toBeGreaterThan(0);
        // Ours fit every direction here (paddings 0 and 1), so both tiles were timed.
        expect(ch.winograd2x2Ms).toBeGreaterThan(0);
        expect(ch.winograd4x4Ms).toBeGreaterThan(0);
        const candidates = [
          { algorithm: 'winograd', ms: ch.winogradMs },
          { algorithm: 'winograd2x2', ms: ch.winograd2x2Ms },
          { algorithm: 'winograd4x4', ms: ch.winograd4x4Ms },
        ].filter((a) => a.ms >= 0 && a.ms < 0.85 * ch.directMs);
        const fastest = candidates.sort((a, b) => a.ms - b.ms)[0]?.algorithm ?? 'direct';
        expect(ch.algorithm).toBe(fastest);
      }
      // The line a run's config.json records (describeBackend's 'timings'): one entry per choice, with the times it
      // compared; logs and summary.md get the brief count, which must add up to the same choices.
      const line = describeConvChoices()!;
      expect(line.split('; ')).toHaveLength(choices.length);
      // The brief form counts the same choices, with no timings.
      expect(describeConvChoices('brief')).toBe(summarizeConvChoices(choices));
      expect(describeConvChoices('brief')).not.toMatch(/ ms/);
      expect(line).toMatch(
        /^forward \d+x\d+x\d+x16 (Winograd|Winograd F\([24]x[24]\)|direct) \((Winograd [\d.]+ ms|no oneDNN Winograd), Winograd F\(2x2\) [\d.]+ ms, Winograd F\(4x4\) [\d.]+ ms, direct [\d.]+ ms\)/,
      );
      expect(() => addon.setConvAlgorithm('fast' as 'auto')).toThrow(
        /expected 'auto', 'direct', 'winograd', 'winograd2x2' or 'winograd4x4', got 'fast'/,
      );
    } finally {
      addon.setConvAlgorithm('auto');
    }
  });

  it.each(['winograd2x2', 'winograd4x4'] as const)(
    'our %s matches cpu over rows of more tiles than one register block, with partial tiles at the edges',
    async (mode) => {
      const { addon } = loaded as { addon: NativeAddon };
      try {
        addon.setConvAlgorithm(mode);
        // Rows of 21 F(2x2) tiles and of 11 and 13 F(4x4) ones: full register blocks of products (12, 6 or 3 tiles
        // with AVX-512, AVX2, SSE) and an overlapping last one, and at the right and bottom edges last tiles 1, 2 or
        // 3 pixels wide.
        for (const side of [
          [7, 41],
          [10, 50],
          [9, 43],
        ] as [number, number][])
          await expectConvMatchesCpu({ batch: 2, side, inC: 16, outC: 16, k: [3, 3], stride: 1, pad: 'same' });
        await expectConvMatchesCpu({ batch: 1, side: [11, 14], inC: 16, outC: 16, k: [3, 3], stride: 1, pad: 'valid' });
      } finally {
        addon.setConvAlgorithm('auto');
      }
    },
  );

  it.each(convCases)('depthwise conv forward and both gradients: %o', async (c) => {
    const rng = makeRng(12);
    const dwCase = { ...c, outC: c.outC % 2 === 0 ? 2 : 1 };
    const { x, w, b } = convInputs(rng, dwCase, true);
    const dil = c.dilation ?? 1;
    const stride = dil > 1 ? 1 : c.stride;
    await expectSame([x, w], (xt, wt) => tf.depthwiseConv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, stride, c.pad, 'NHWC', dil));
    await expectSame([x, w, b], (xt, wt, bt) =>
      tf.fused.depthwiseConv2d({
        x: xt as tf.Tensor4D,
        filter: wt as tf.Tensor4D,
        bias: bt,
        strides: stride,
        pad: c.pad,
        dilations: dil,
        activation: 'relu',
      }),
    );
    if (dil > 1) return; // tfjs has no depthwise gradient for dilation > 1 on any backend
    await expectSame([x, w], (xt, wt) => {
      const loss = (xx: tf.Tensor, ww: tf.Tensor) =>
        tf
          .depthwiseConv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, stride, c.pad, 'NHWC', dil)
          .square()
          .sum();
      return tf.grads(loss)([xt, wt]);
    });
  });

  // The separable layers' depthwise filters (3x3, stride 1, 'same', one per channel): with vectors narrower than
  // 16 lanes their gradient runs the addon's own loop where the vectors divide the channels (16 and 32; with 8-lane
  // builds 24 too), else oneDNN's. The loop is also checked directly against cpu, so every build tests it. Widths 13
  // and 5 leave an odd column after the loop's pairs, width 1 has no neighbours at all.
  it.each([{ shape: [2, 10, 13, 16] }, { shape: [3, 7, 5, 32] }, { shape: [2, 6, 1, 16] }, { shape: [2, 5, 4, 24] }])(
    "a separable layer's depthwise filter gradient: %o",
    async ({ shape }) => {
      const { addon } = loaded as { addon: NativeAddon };
      const rng = makeRng(21);
      const random = (dims: number[]) => ({
        shape: dims,
        data: Float32Array.from({ length: dims.reduce((p, q) => p * q) }, () => rng() * 2 - 1),
      });
      const [x, w] = [random(shape), random([3, 3, shape[3], 1])];
      const loss = (xx: tf.Tensor, ww: tf.Tensor) =>
        tf
          .depthwiseConv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, 1, 'same')
          .square()
          .sum();
      await expectSame([x, w], (xt, wt) => tf.grads(loss)([xt, wt]));
      // The loop itself, for one dy, against cpu's filter gradient; it runs only where the vectors divide the channels.
      const dy = random(shape);
      const dw = new Float32Array(9 * shape[3]);
      const ran = addon.depthwiseFilterGrad3x3!(x.data, dy.data, dw, Int32Array.from(shape));
      expect(ran).toBe(shape[3] % addon.vectorLanes() === 0);
      if (!ran) return;
      await tf.setBackend('cpu');
      const attrs = { strides: 1, pad: 'same', filterShape: [3, 3, shape[3], 1], dilations: 1 };
      const onCpu = tf.tidy(() => {
        const [xt, dyt] = [tf.tensor(x.data, shape), tf.tensor(dy.data, shape)];
        return tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x: xt, dy: dyt }, attrs) as tf.Tensor;
      });
      const cpuDw = onCpu.dataSync() as Float32Array;
      onCpu.dispose();
      await tf.setBackend('native'); // before the check, so a failure leaves the next tests on native
      expect(relError(dw, cpuDw)).toBeLessThanOrEqual(1e-5);
    },
  );

  it.each([
    { shape: [1, 7, 7, 3], size: 2, stride: 2, pad: 'valid' as const },
    { shape: [3, 9, 8, 5], size: 2, stride: 2, pad: 'same' as const },
    { shape: [2, 10, 11, 17], size: 3, stride: 2, pad: 'same' as const },
    { shape: [2, 8, 8, 4], size: 3, stride: 1, pad: 'valid' as const },
    { shape: [2, 9, 11, 20], size: 2, stride: 2, pad: 'valid' as const },
    { shape: [4, 150, 150, 16], size: 2, stride: 2, pad: 'valid' as const },
  ])('max pool forward and gradient: %o', async (p) => {
    const rng = makeRng(13);
    const x = {
      shape: p.shape,
      data: randomArray(
        rng,
        p.shape.reduce((a, b) => a * b),
      ),
    };
    await expectSame([x], (xt) => tf.maxPool(xt as tf.Tensor4D, p.size, p.stride, p.pad));
    await expectSame([x], (xt) =>
      tf.grad((xx: tf.Tensor) =>
        tf
          .maxPool(xx as tf.Tensor4D, p.size, p.stride, p.pad)
          .square()
          .sum(),
      )(xt),
    );
  });

  it("the input standardization is one kernel on native, matching cpu's six ops (a flat image too) and their gradient", async () => {
    const rng = makeRng(21);
    const [n, h, w] = [4, 9, 7];
    const data = Float32Array.from({ length: n * h * w }, (_, i) => (i < 3 * h * w ? 0.2 + 0.6 * rng() : 0.4)); // image 4 flat
    const x = { shape: [n, h, w, 1], data };
    const weights = { shape: [n, h, w, 1], data: randomArray(rng, n * h * w) };
    await expectSame([x], (xt) => standardizeImages(xt as tf.Tensor4D));
    // The gradient against the ops' own on the three images with contrast (on the flat one the ops' sqrt(0) gives NaN).
    const gradient = (xt: tf.Tensor, wt: tf.Tensor) =>
      tf.grad((t: tf.Tensor) => tf.sum(tf.mul(standardizeImages(t as tf.Tensor4D), wt)))(xt);
    const varied = (t: { data: Float32Array }) => ({ shape: [3, h, w, 1], data: t.data.slice(0, 3 * h * w) });
    await expectSame([varied(x), varied(weights)], gradient);
    await tf.setBackend('native');
    // On the flat one the std is the floor, a constant: dx = (dy - mean(dy)) * sqrt(pixels).
    const dx = tf.tidy(() => gradient(tf.tensor4d(data, [n, h, w, 1]), tf.tensor4d(weights.data, [n, h, w, 1])).dataSync());
    const dy = weights.data.slice(3 * h * w);
    const meanDy = dy.reduce((a, b) => a + b, 0) / dy.length;
    dx.slice(3 * h * w).forEach((v, i) => expect(v).toBeCloseTo((dy[i] - meanDy) * Math.sqrt(h * w), 4));
    const profile = await tf.profile(() => standardizeImages(tf.tensor4d(data, [n, h, w, 1])));
    expect(profile.kernelNames).toContain(STANDARDIZE_IMAGES);
    expect(profile.kernelNames).not.toContain('Mean');
  });

  it('max pool gradient picks the first of tied maxima, like cpu', async () => {
    const data = new Float32Array([1, 1, 1, 1, 2, 2, 0, 2, 3, 3, 3, 3, 0, 0, 0, 0]);
    await expectSame([{ shape: [1, 4, 4, 1], data }], (xt) =>
      tf.grad((xx: tf.Tensor) =>
        tf
          .maxPool(xx as tf.Tensor4D, 2, 2, 'valid')
          .mul(tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]))
          .sum(),
      )(xt),
    );
  });

  it('max pool gradient of windows holding NaN, -Infinity and signed zeros matches cpu exactly', async () => {
    // Windows in order: all -inf; NaN then 1; all NaN; -0 then +0 ties; +0 then -0 ties; -inf then 5; 3 then NaN.
    const windows = [
      [-Infinity, -Infinity, -Infinity, -Infinity],
      [NaN, 1, 0, 1],
      [NaN, NaN, NaN, NaN],
      [-0, 0, -1, 0],
      [0, -0, -1, -0],
      [-Infinity, 5, 5, -Infinity],
      [3, NaN, 2, 3],
      [-2, -1, -1, -3],
    ];
    // Two rows of four 2x2 windows over a [1, 4, 8, 1] image: window w covers rows 2*(w >> 2), columns 2*(w & 3).
    const data = new Float32Array(32);
    windows.forEach((taps, w) =>
      taps.forEach((v, t) => {
        data[(2 * (w >> 2) + (t >> 1)) * 8 + 2 * (w & 3) + (t & 1)] = v;
      }),
    );
    const weights = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 4, 1]);
    const [native, cpu] = await onBoth([{ shape: [1, 4, 8, 1], data }], (xt) =>
      tf.grad((xx: tf.Tensor) =>
        tf
          .maxPool(xx as tf.Tensor4D, 2, 2, 'valid')
          .mul(weights)
          .sum(),
      )(xt),
    );
    expect(Array.from(native[0])).toEqual(Array.from(cpu[0]));
    expect(Array.from(native[0]).filter((v) => v !== 0)).toHaveLength(6); // the two windows with no finite maximum give none
    weights.dispose();
  });

  it.each([
    { a: [5, 7], b: [7, 3], ta: false, tb: false },
    { a: [7, 5], b: [7, 3], ta: true, tb: false },
    { a: [5, 7], b: [3, 7], ta: false, tb: true },
    { a: [2, 7, 5], b: [2, 3, 7], ta: true, tb: true },
    { a: [4, 3, 6], b: [6, 2], ta: false, tb: false },
    { a: [2, 3, 5, 6], b: [2, 3, 6, 4], ta: false, tb: false },
  ])('matmul and fused matmul (bias+relu): %o', async (m) => {
    const rng = makeRng(14);
    const a = {
      shape: m.a,
      data: randomArray(
        rng,
        m.a.reduce((x, y) => x * y),
      ),
    };
    const b = {
      shape: m.b,
      data: randomArray(
        rng,
        m.b.reduce((x, y) => x * y),
      ),
    };
    const n = m.tb ? m.b[m.b.length - 2] : m.b[m.b.length - 1];
    const bias = { shape: [n], data: randomArray(rng, n) };
    await expectSame([a, b], (at, bt) => tf.matMul(at, bt, m.ta, m.tb));
    await expectSame([a, b, bias], (at, bt, biast) =>
      tf.fused.matMul({ a: at, b: bt, transposeA: m.ta, transposeB: m.tb, bias: biast, activation: 'relu' }),
    );
    if (m.a.length !== m.b.length) return; // tfjs's matmul gradient does not reduce broadcast batches
    await expectSame([a, b], (at, bt) => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, m.ta, m.tb).square().sum())([at, bt]));
  });

  it('falls back to cpu for what the addon does not fuse (elu activation, int32)', async () => {
    const rng = makeRng(15);
    const c = convCases[1];
    const { x, w, b } = convInputs(rng, c, false);
    await expectSame([x, w, b], (xt, wt, bt) =>
      tf.fused.conv2d({ x: xt as tf.Tensor4D, filter: wt as tf.Tensor4D, bias: bt, strides: 2, pad: 'same', activation: 'elu' }),
    );
    await tf.setBackend('native');
    const r = tf.tidy(() => tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2], 'int32'), tf.tensor2d([1, 0, 0, 1], [2, 2], 'int32')));
    expect(r.dtype).toBe('int32');
    expect(Array.from(await r.data())).toEqual([1, 2, 3, 4]);
    r.dispose();
  });

  it.each([
    { a: [4, 5, 6, 7], b: [4, 5, 6, 7] },
    { a: [4, 5, 6, 7], b: [7] },
    { a: [1, 1, 1, 7], b: [4, 5, 6, 7] },
    { a: [4, 5, 6, 7], b: [] },
    { a: [], b: [3, 9] },
    { a: [6, 1], b: [6, 5] },
    { a: [6, 1], b: [1, 5] },
    { a: [2, 3, 4], b: [3, 1] },
    { a: [3, 70000], b: [3, 70000] },
    { a: [1, 70000], b: [2, 70000] },
    // per-channel vectors at the fixed widths of the row loop, threaded (> 262144 elements) and not
    { a: [2, 10000, 16], b: [16] },
    { a: [1, 1, 32], b: [3, 5, 32] },
    { a: [9000, 64], b: [1, 64] },
    { a: [5, 8], b: [8] },
  ])('add, sub, mul, div, squared difference with broadcasting: %o', async (c) => {
    const rng = makeRng(17);
    const a = {
      shape: c.a,
      data: randomArray(
        rng,
        c.a.reduce((x, y) => x * y, 1),
      ),
    };
    const b = {
      shape: c.b,
      data: randomArray(
        rng,
        c.b.reduce((x, y) => x * y, 1),
      ).map((v) => v + 3),
    };
    await expectSame([a, b], (x, y) => [tf.add(x, y), tf.sub(x, y), tf.mul(x, y), tf.div(x, y), tf.squaredDifference(x, y)], 1e-6);
  });

  it('unary ops keep tfjs semantics (NaN, zero, negatives)', async () => {
    const rng = makeRng(18);
    const data = randomArray(rng, 40003);
    data[0] = NaN;
    data[1] = 0;
    data[2] = -0;
    const x = { shape: [40003], data };
    const [native, cpu] = await onBoth([x], (t) => [
      tf.relu(t),
      tf.step(t, 0.3),
      tf.square(t),
      tf.neg(t),
      tf.sqrt(tf.abs(t)),
      tf.rsqrt(tf.abs(t).add(0.1)),
      tf.floor(t.mul(3)),
      tf.clipByValue(t, -0.3, 0.7),
    ]);
    native.forEach((n, i) => expect(Array.from(n)).toEqual(Array.from(cpu[i])));
  });

  it('relu gradient (fused dy * step(x)) is exactly the cpu gradient, NaN and signed zeros included', async () => {
    const rng = makeRng(22);
    const n = 300007; // above the parallel threshold
    const xData = randomArray(rng, n);
    const dyData = randomArray(rng, n);
    xData[0] = NaN;
    xData[1] = 0;
    xData[2] = -0;
    xData[3] = -1;
    dyData[3] = Infinity;
    dyData[4] = NaN;
    const inputs = [
      { shape: [n], data: xData },
      { shape: [n], data: dyData },
    ];
    const [native, cpu] = await onBoth(inputs, (x, dy) => tf.grad((t: tf.Tensor) => tf.relu(t))(x, dy));
    expect(Array.from(native[0])).toEqual(Array.from(cpu[0]));
    expect(Object.is(native[0][2], cpu[0][2])).toBe(true);
  });

  it.each([
    { shape: [4, 5, 6, 7], axis: [0, 1, 2], keepDims: false },
    { shape: [4, 5, 6, 7], axis: [0, 1, 2], keepDims: true },
    { shape: [4, 5, 6, 7], axis: [3], keepDims: false },
    { shape: [4, 5, 6, 7], axis: [2, 3], keepDims: true },
    { shape: [4, 5, 6, 7], axis: null, keepDims: false },
    { shape: [4, 5, 6, 7], axis: [1], keepDims: false },
    { shape: [300000, 3], axis: [0], keepDims: false },
    // channel counts with a register-resident column-sum loop (8, 16, 32, 64), threaded and not
    { shape: [2, 10000, 16], axis: [0, 1], keepDims: false },
    { shape: [33, 8], axis: [0], keepDims: true },
    { shape: [9, 32], axis: [0], keepDims: false },
    { shape: [5000, 64], axis: [0], keepDims: false },
    { shape: [9], axis: -1, keepDims: false },
  ])('sum and mean: %o', async (c) => {
    const rng = makeRng(19);
    const x = {
      shape: c.shape,
      data: randomArray(
        rng,
        c.shape.reduce((p, q) => p * q),
      ),
    };
    const axis = c.axis === null ? undefined : c.axis;
    await expectSame([x], (t) => [tf.sum(t, axis, c.keepDims), tf.mean(t, axis, c.keepDims)], 1e-5);
  });

  it.each([
    { shape: [4, 30, 30, 8], axis: [0, 1, 2], keepDims: true }, // batch-norm's statistics, above the parallel threshold
    { shape: [4, 5, 6, 7], axis: [0, 1, 2], keepDims: false },
    { shape: [4, 5, 6, 7], axis: [1, 2], keepDims: false },
    { shape: [4, 5, 6, 7], axis: [3], keepDims: true },
    { shape: [4, 5, 6, 7], axis: null, keepDims: false },
    { shape: [9], axis: -1, keepDims: false },
  ])('mean gradient (dy / n tiled over the reduced axes): %o', async (c) => {
    const rng = makeRng(24);
    const count = c.shape.reduce((p, q) => p * q);
    const x = { shape: c.shape, data: randomArray(rng, count) };
    const axis = c.axis === null ? undefined : c.axis;
    // A non-uniform dy: a wrong axis or a missing division shows in the values, not only in the shape.
    const weightedMean = (a: tf.Tensor) => {
      const m = tf.mean(a, axis, c.keepDims);
      return tf.sum(tf.mul(m, tf.range(1, 1 + m.size).reshape(m.shape)));
    };
    await expectSame([x], (t) => tf.grad(weightedMean)(t), 1e-6);
  });

  it.each([
    { shape: [1, 1, 1, 5], reps: [2, 3, 4, 1] },
    { shape: [2, 3], reps: [2, 3] },
    { shape: [7], reps: [3] },
  ])('tile: %o', async (c) => {
    const rng = makeRng(20);
    const x = {
      shape: c.shape,
      data: randomArray(
        rng,
        c.shape.reduce((p, q) => p * q),
      ),
    };
    await expectSame([x], (t) => tf.tile(t, c.reps), 0);
  });

  it.each([
    { shape: [2, 5, 6, 7], stats: [7], withScale: true },
    { shape: [2, 5, 6, 7], stats: [7], withScale: false },
    { shape: [9, 3], stats: [1], withScale: true },
  ])('fused batch norm: %o', async (c) => {
    const rng = makeRng(21);
    const x = {
      shape: c.shape,
      data: randomArray(
        rng,
        c.shape.reduce((p, q) => p * q),
      ),
    };
    const n = c.stats[0];
    const stat = (shift: number) => ({ shape: c.stats, data: randomArray(rng, n).map((v) => v + shift) });
    const [mean, variance, offset, scale] = [stat(0), stat(1.5), stat(0), stat(1)];
    await expectSame([x, mean, variance, offset, scale], (xt, m, v, o, s) =>
      c.withScale ? tf.batchNorm(xt, m, v, o, s, 0.001) : tf.batchNorm(xt, m, v, undefined, undefined, 0.001),
    );
  });

  it.each([
    { shape: [4, 30, 30, 8], withScale: true }, // above the parallel threshold
    { shape: [3, 5, 6, 7], withScale: true },
    { shape: [11, 5], withScale: true },
  ])('fused batch norm gradient (every input, statistics from moments as in training): %o', async (c) => {
    const rng = makeRng(23);
    const channels = c.shape[c.shape.length - 1];
    const x = {
      shape: c.shape,
      data: randomArray(
        rng,
        c.shape.reduce((p, q) => p * q),
      ).map((v) => v * 3 + 1),
    };
    const dy = { shape: c.shape, data: randomArray(rng, x.data.length) };
    const vec = (shift: number) => ({ shape: [channels], data: randomArray(rng, channels).map((v) => v + shift) });
    const [variance, offset, scale] = [vec(1.5), vec(0), vec(1)];
    const axes = c.shape.slice(0, -1).map((_, i) => i);
    // (tfjs itself cannot record batchNorm without a scale for gradients: it saves the missing input.)
    await expectSame([x, dy, variance, offset, scale], (xt, dyt, v, o, s) => {
      const direct = tf.grads((a: tf.Tensor, m: tf.Tensor, va: tf.Tensor, off: tf.Tensor, sc: tf.Tensor) =>
        c.withScale ? tf.batchNorm(a, m, va, off, sc, 0.001) : tf.batchNorm(a, m, va, off, undefined, 0.001),
      )([xt, tf.mean(xt, axes), v, o, s], dyt);
      const training = tf.grad((a: tf.Tensor) => {
        const { mean, variance: vr } = tf.moments(a, axes);
        return tf.batchNorm(a, mean, vr, o, c.withScale ? s : undefined, 0.001);
      })(xt, dyt);
      return [...direct.slice(0, c.withScale ? 5 : 4), training];
    });
  });

  // 16, 32 and 64 channels take the loops with their sums in registers; 24 the loop for any width.
  it.each([16, 32, 64, 24])(
    "the conv layers' ReLU mask and bias sums (%i channels): the sums are native Sum's over the mask to the bit, the mask is cpu's",
    async (channels) => {
      await tf.setBackend('native');
      const rng = makeRng(31);
      const shape = [4, 90, 90, channels]; // >= 518400 values: above the parallel threshold, so both threads take rows
      const dy = tf.tensor(randomArray(rng, 4 * 90 * 90 * channels), shape);
      const y = tf.relu(tf.tensor(randomArray(rng, 4 * 90 * 90 * channels), shape));
      const [masked, sums] = tf.engine().runKernel('ReluGradChannelSums', { dy, y }) as tf.Tensor[];
      const viaSum = tf.sum(masked, [0, 1, 2]);
      expect(Array.from(await sums.data())).toEqual(Array.from(await viaSum.data()));
      const expected = tf.mul(dy, tf.step(y));
      expect(Array.from(await masked.data())).toEqual(Array.from(await expected.data()));
      tf.dispose([dy, y, masked, sums, viaSum, expected]);
    },
  );

  it('fused Adam updates match tfjs Adam on cpu over several steps (map and list gradients)', async () => {
    const rng = makeRng(24);
    const big = randomArray(rng, 300001); // above the parallel threshold
    const small = randomArray(rng, 7);
    const targets = [randomArray(rng, big.length), randomArray(rng, small.length)];
    const left: number[] = [];
    const run = async (backend: string): Promise<Float32Array[]> => {
      await tf.setBackend(backend);
      const before = tf.memory().numTensors;
      const vars = [tf.variable(tf.tensor(big)), tf.variable(tf.tensor(small))];
      const goal = targets.map((t) => tf.tensor(t));
      const optimizer = tf.train.adam(0.05);
      for (let step = 0; step < 3; step++) {
        optimizer.minimize(() => tf.addN(vars.map((v, i) => tf.sum(tf.square(tf.sub(v, goal[i]))))), false, vars);
      }
      const grads = tf.tidy(() => vars.map((v, i) => ({ name: v.name, tensor: tf.mul(tf.sub(v, goal[i]), 2) })));
      optimizer.applyGradients(grads);
      const out = await Promise.all(vars.map(async (v) => (await v.data()) as Float32Array));
      tf.dispose([...vars, ...goal, ...grads.map((g) => g.tensor)]);
      optimizer.dispose();
      left.push(tf.memory().numTensors - before);
      return out;
    };
    const native = await run('native');
    const cpu = await run('cpu');
    // tfjs's own Adam keeps 2 tensors after dispose() on cpu too; the fused path must add none.
    expect(left[0]).toBe(left[1]);
    native.forEach((n, i) => expect(relError(n, cpu[i])).toBeLessThanOrEqual(1e-5));
    expect(relError(native[0], big)).toBeGreaterThan(1e-3); // the variables did move
  });

  it('recycles output buffers without corrupting read results or slices that alias them', async () => {
    await tf.setBackend('native');
    const before = tf.memory().numTensors;
    const n = 200_000; // above the pooling threshold
    const a = tf.fill([n], 1.5);
    const doubled = tf.add(a, a); // addon output, pooled when disposed
    const read = doubled.dataSync();
    const head = tf.slice(doubled, [0], [10]); // the CPU slice kernel aliases doubled's buffer
    const tail = tf.slice(doubled, [n - 10], [10]);
    doubled.dispose();
    // Same-sized outputs would reuse doubled's buffer if it had been recycled too early.
    for (let i = 0; i < 5; i++) tf.tidy(() => tf.mul(a, tf.scalar(-7 - i)).dataSync());
    expect(Array.from(await head.data())).toEqual(new Array(10).fill(3));
    expect(Array.from(await tail.data())).toEqual(new Array(10).fill(3));
    expect(read[0]).toBe(3);
    expect(read[n - 1]).toBe(3);
    tf.dispose([a, head, tail]);
    // Once the slices are gone the buffer is free again and results stay right.
    const again = tf.tidy(() => tf.mul(tf.fill([n], 2), tf.scalar(3)));
    expect((await again.data())[n - 1]).toBe(6);
    again.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it("Transform (bilinear, 'nearest' fill) warps every image of a batch as augment.ts's JavaScript warp, to the bit", async () => {
    await tf.setBackend('native');
    const rng = makeRng(41);
    const [n, h, w] = [5, 23, 31];
    const transforms = new Float32Array(n * 8);
    sampleAugmentParams({ zoom: 0.3, rotation: 25, widthShift: 0.2, heightShift: 0.1, hflip: true }, rng, n, h, w).forEach((p, i) =>
      transforms.set(transformFor(p, h, w), i * 8),
    );
    for (const c of [1, 3]) {
      const images = randomArray(rng, n * h * w * c);
      const warped = tf.tidy(() =>
        tf.image.transform(tf.tensor4d(images, [n, h, w, c]), tf.tensor2d(transforms, [n, 8]), 'bilinear', 'nearest').dataSync(),
      );
      expect(Array.from(warped)).toEqual(Array.from(warpBilinearNearest(images, [n, h, w, c], transforms)));
    }
    // One transform for the whole batch, and an output size of its own: against cpu, whose kernel is right for image 0.
    const one = { shape: [1, h, w, 1], data: randomArray(rng, h * w) };
    const t = { shape: [1, 8], data: transforms.slice(8, 16) };
    await expectSame(
      [one, t],
      (x, tt) => tf.image.transform(x as tf.Tensor4D, tt as tf.Tensor2D, 'bilinear', 'nearest', 0, [17, 40]),
      1e-5,
    );
  });

  it('the augmentation on native matches cpu (within float32 rounding) and changes every image', async () => {
    const [n, h, w] = [6, 20, 24];
    const images = Float32Array.from(randomArray(makeRng(42), n * h * w), (v) => (v + 1) / 2);
    const cfg = { zoom: 0.2, rotation: 15, widthShift: 0.1, heightShift: 0.1, brightness: 0.2, contrast: 0.2 };
    const [[native], [cpu]] = await onBoth([{ shape: [n, h, w, 1], data: images }], (x) => augmentBatch(x as tf.Tensor4D, cfg, makeRng(7)));
    expect(relError(native, cpu)).toBeLessThan(1e-5);
    for (let i = 0; i < n; i++) {
      const image = native.subarray(i * h * w, (i + 1) * h * w);
      expect(Math.max(...image.map((v, j) => Math.abs(v - images[i * h * w + j])))).toBeGreaterThan(0.05);
    }
  });

  it.each(['floor', 'round', 'ceil'] as const)('conv2d and max pool with explicit padding and %s rounding', async (rounding) => {
    const rng = makeRng(22);
    const x = { shape: [2, 10, 9, 3], data: randomArray(rng, 540) };
    const w = { shape: [3, 3, 3, 4], data: randomArray(rng, 108) };
    await expectSame([x, w], (xt, wt) => tf.conv2d(xt as tf.Tensor4D, wt as tf.Tensor4D, 2, 1, 'NHWC', 1, rounding));
    await expectSame([x], (xt) => tf.maxPool(xt as tf.Tensor4D, 3, 2, 1, rounding));
  });
});
