import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AugmentConfig,
  DEFAULT_AUGMENT,
  ImageAugmentParams,
  NO_AUGMENT,
  SEED_AUGMENT,
  applyAugmentParams,
  augmentBatch,
  formatAugment,
  parseAugment,
  sampleAugmentParams,
  transformFor,
  warpBilinearNearest,
  IDENTITY_PARAMS,
} from '../src/augment';
import { makeRng } from '../src/random';

const BACKENDS = ['cpu', 'wasm'] as const;
type BackendName = (typeof BACKENDS)[number];

async function useBackend(name: BackendName): Promise<void> {
  if (!(await tf.setBackend(name))) throw new Error(`could not start the ${name} backend`);
  await tf.ready();
}

beforeAll(async () => {
  setWasmPaths(path.resolve(__dirname, '../node_modules/@tensorflow/tfjs-backend-wasm/dist') + path.sep);
  await useBackend('cpu');
});

afterAll(async () => {
  await useBackend('cpu');
});

const IDENTITY: ImageAugmentParams = { ...IDENTITY_PARAMS };

/** One image of zeros with bright pixels at the given (row, col) positions. */
function dots(h: number, w: number, points: Array<[number, number]>): Float32Array {
  const img = new Float32Array(h * w);
  for (const [r, c] of points) img[r * w + c] = 1;
  return img;
}

function randomImages(n: number, h: number, w: number, seed: number): Float32Array {
  const rng = makeRng(seed);
  return Float32Array.from({ length: n * h * w }, () => rng());
}

/** Runs fn on a fresh tensor, returns the result's values as nested arrays, disposing everything. */
function run(values: Float32Array, shape: [number, number, number, number], fn: (x: tf.Tensor4D) => tf.Tensor4D): Float32Array {
  const x = tf.tensor4d(values, shape);
  const y = fn(x);
  const out = y.dataSync() as Float32Array;
  const copy = out.slice();
  x.dispose();
  y.dispose();
  return copy;
}

function centroid(img: Float32Array, h: number, w: number): { row: number; col: number; mass: number } {
  let mass = 0,
    row = 0,
    col = 0;
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const v = img[r * w + c];
      mass += v;
      row += v * r;
      col += v * c;
    }
  }
  return { row: row / mass, col: col / mass, mass };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('parseAugment / formatAugment', () => {
  it('expands the named presets into copies', () => {
    expect(parseAugment('default')).toEqual(DEFAULT_AUGMENT);
    expect(parseAugment(' SEED ')).toEqual(SEED_AUGMENT);
    expect(parseAugment('none')).toEqual({});
    const copy = parseAugment('default');
    copy.zoom = 0.9;
    expect(DEFAULT_AUGMENT.zoom).toBe(0.15);
    expect(formatAugment(parseAugment('default'))).toBe(
      'zoom=0.15,rotation=10,width-shift=0.1,height-shift=0.1,brightness=0.1,contrast=0.1',
    );
  });
  it('parses the seed article config and CLI-style specs', () => {
    expect(parseAugment('zoom=0.3,vflip')).toEqual({ zoom: 0.3, vflip: true });
    expect(parseAugment('rotation=10,width-shift=0.1,hflip,brightness=0.1')).toEqual({
      rotation: 10,
      widthShift: 0.1,
      hflip: true,
      brightness: 0.1,
    });
    expect(parseAugment(' height-shift = 0.05 , contrast=0.2, vflip=false ')).toEqual({ heightShift: 0.05, contrast: 0.2, vflip: false });
    expect(parseAugment('widthShift=0.1')).toEqual({ widthShift: 0.1 });
    expect(parseAugment('none')).toEqual({});
    expect(parseAugment('')).toEqual({});
    expect(parseAugment('  ')).toEqual({});
  });

  it('formats to a canonical string that parses back to the same config', () => {
    expect(formatAugment(SEED_AUGMENT)).toBe('zoom=0.3,vflip');
    expect(formatAugment(NO_AUGMENT)).toBe('none');
    const configs: AugmentConfig[] = [
      {},
      SEED_AUGMENT,
      { zoom: 0.1, rotation: 15, widthShift: 0.1, heightShift: 0.2, hflip: true, vflip: true, brightness: 0.1, contrast: 0.25 },
      { brightness: 0.05 },
    ];
    for (const cfg of configs) expect(parseAugment(formatAugment(cfg))).toEqual(cfg);
    for (const spec of ['zoom=0.3,vflip', 'rotation=10,width-shift=0.1,hflip,brightness=0.1', 'none']) {
      expect(formatAugment(parseAugment(spec))).toBe(spec);
    }
  });

  it('rejects unknown keys, naming the key and listing the valid ones', () => {
    expect(() => parseAugment('zoom=0.3,zom=0.2')).toThrow(/unknown key 'zom'.*zoom=<number>.*width-shift=<number>.*vflip/);
    expect(() => parseAugment('shear=0.2')).toThrow(/'shear'/);
  });

  it('rejects bad numbers, missing values, out-of-range values, bad flags and duplicates', () => {
    expect(() => parseAugment('zoom=abc')).toThrow(/'zoom=abc' is not a number/);
    expect(() => parseAugment('zoom=0x1')).toThrow(/not a number/);
    expect(() => parseAugment('zoom')).toThrow(/'zoom' needs a value/);
    expect(() => parseAugment('zoom=')).toThrow(/'zoom' needs a value/);
    expect(() => parseAugment('zoom=1.5')).toThrow(/zoom=1.5 is out of range/);
    expect(() => parseAugment('rotation=-5')).toThrow(/rotation=-5 is out of range/);
    expect(() => parseAugment('vflip=maybe')).toThrow(/'vflip' is a flag/);
    expect(() => parseAugment('vflip,vflip')).toThrow(/more than once/);
    expect(() => parseAugment('zoom=0.3,,vflip')).toThrow(/empty entry/);
  });

  it('augmentBatch validates configs built in code', () => {
    const x = tf.zeros([1, 4, 4, 1]) as tf.Tensor4D;
    expect(() => augmentBatch(x, { zoom: 2 }, makeRng(1))).toThrow(/zoom=2 is out of range/);
    expect(() => augmentBatch(x, { shear: 0.1 } as unknown as AugmentConfig, makeRng(1))).toThrow(/unknown key 'shear'/);
    x.dispose();
  });
});

describe('sampleAugmentParams', () => {
  it('draws within the configured ranges and flips about half the images', () => {
    const cfg: AugmentConfig = {
      zoom: 0.3,
      rotation: 10,
      widthShift: 0.1,
      heightShift: 0.2,
      hflip: true,
      vflip: true,
      brightness: 0.1,
      contrast: 0.2,
    };
    const params = sampleAugmentParams(cfg, makeRng(3), 2000, 100, 50);
    for (const p of params) {
      expect(p.zoomX).toBeGreaterThanOrEqual(0.7);
      expect(p.zoomX).toBeLessThanOrEqual(1.3);
      expect(Math.abs(p.rotation)).toBeLessThanOrEqual(10);
      expect(Math.abs(p.shiftX)).toBeLessThanOrEqual(0.1 * 50);
      expect(Math.abs(p.shiftY)).toBeLessThanOrEqual(0.2 * 100);
      expect(Math.abs(p.brightness)).toBeLessThanOrEqual(0.1);
      expect(Math.abs(p.contrast - 1)).toBeLessThanOrEqual(0.2);
    }
    const flipped = params.filter((p) => p.vflip).length / params.length;
    expect(flipped).toBeGreaterThan(0.45);
    expect(flipped).toBeLessThan(0.55);
    // Zoom is drawn independently per axis, as in Keras.
    expect(params.some((p) => Math.abs(p.zoomX - p.zoomY) > 0.1)).toBe(true);
    expect(Math.max(...params.map((p) => p.zoomX))).toBeGreaterThan(1.25);
    expect(Math.min(...params.map((p) => p.zoomX))).toBeLessThan(0.75);
  });
});

describe.each(BACKENDS)('augmentBatch on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });
  afterAll(async () => {
    await useBackend('cpu');
  });

  it('vflip exactly reverses the rows of the images it picks and leaves the others unchanged', () => {
    const [n, h, w] = [10, 7, 9];
    const input = randomImages(n, h, w, 1);
    const cfg: AugmentConfig = { vflip: true };
    const params = sampleAugmentParams(cfg, makeRng(42), n, h, w);
    expect(params.some((p) => p.vflip)).toBe(true);
    expect(params.some((p) => !p.vflip)).toBe(true);
    const out = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(42)));
    const reversed = run(input, [n, h, w, 1], (x) => tf.reverse(x, 1));
    const size = h * w;
    params.forEach((p, i) => {
      const expected = (p.vflip ? reversed : input).subarray(i * size, (i + 1) * size);
      expect(Array.from(out.subarray(i * size, (i + 1) * size))).toEqual(Array.from(expected));
    });
  });

  it('hflip exactly reverses the columns of the images it picks', () => {
    const [n, h, w] = [10, 7, 9];
    const input = randomImages(n, h, w, 2);
    const cfg: AugmentConfig = { hflip: true };
    const params = sampleAugmentParams(cfg, makeRng(7), n, h, w);
    expect(params.some((p) => p.hflip)).toBe(true);
    expect(params.some((p) => !p.hflip)).toBe(true);
    const out = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(7)));
    const reversed = run(input, [n, h, w, 1], (x) => tf.reverse(x, 2));
    const size = h * w;
    params.forEach((p, i) => {
      const expected = (p.hflip ? reversed : input).subarray(i * size, (i + 1) * size);
      expect(Array.from(out.subarray(i * size, (i + 1) * size))).toEqual(Array.from(expected));
    });
  });

  it('a pure whole-pixel shift moves a bright pixel by exactly that many pixels, in every image of the batch', () => {
    const [h, w] = [11, 15];
    const img = dots(h, w, [[5, 6]]);
    const input = new Float32Array(3 * h * w);
    for (let i = 0; i < 3; i++) input.set(img, i * h * w);
    const params = [{ ...IDENTITY, shiftX: 3, shiftY: -2 }, { ...IDENTITY, shiftX: -4, shiftY: 1 }, { ...IDENTITY }];
    const out = run(input, [3, h, w, 1], (x) => applyAugmentParams(x, params, { widthShift: 0.3, heightShift: 0.3 }));
    const expected = [dots(h, w, [[3, 9]]), dots(h, w, [[6, 2]]), img];
    expected.forEach((e, i) => expect(Array.from(out.subarray(i * h * w, (i + 1) * h * w))).toEqual(Array.from(e)));
  });

  it('random shifts move the centroid of a bright pixel by the drawn (sub-pixel) amounts', () => {
    const [n, h, w] = [6, 21, 25];
    const input = new Float32Array(n * h * w);
    for (let i = 0; i < n; i++) input.set(dots(h, w, [[10, 12]]), i * h * w);
    const cfg: AugmentConfig = { widthShift: 0.2, heightShift: 0.2 };
    const params = sampleAugmentParams(cfg, makeRng(5), n, h, w);
    const out = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(5)));
    params.forEach((p, i) => {
      const c = centroid(out.subarray(i * h * w, (i + 1) * h * w), h, w);
      expect(c.mass).toBeCloseTo(1, 5);
      expect(c.row).toBeCloseTo(10 + p.shiftY, 4);
      expect(c.col).toBeCloseTo(12 + p.shiftX, 4);
    });
  });

  it('zoom keeps the centre fixed and scales distances from it', () => {
    const [h, w] = [21, 21];
    // Centre pixel and one 4 px right of it; zoom 0.8 (zoom in) maps offset 4 to 4 / 0.8 = 5.
    const input = dots(h, w, [
      [10, 10],
      [10, 14],
    ]);
    const out = run(input, [1, h, w, 1], (x) => applyAugmentParams(x, [{ ...IDENTITY, zoomX: 0.8, zoomY: 0.8 }], { zoom: 0.3 }));
    expect(out[10 * w + 10]).toBeCloseTo(1, 6);
    expect(out[10 * w + 15]).toBeCloseTo(1, 6);
    expect(out[10 * w + 14]).toBeCloseTo(0.2, 5); // bilinear spill from the magnified dot
  });

  it('random zoom never moves the centroid of a centred dot', () => {
    const [n, h, w] = [8, 21, 21];
    const input = new Float32Array(n * h * w);
    for (let i = 0; i < n; i++) input.set(dots(h, w, [[10, 10]]), i * h * w);
    const out = run(input, [n, h, w, 1], (x) => augmentBatch(x, SEED_AUGMENT, makeRng(9)));
    for (let i = 0; i < n; i++) {
      const c = centroid(out.subarray(i * h * w, (i + 1) * h * w), h, w);
      expect(c.row).toBeCloseTo(10, 4);
      expect(c.col).toBeCloseTo(10, 4);
    }
  });

  it('a 90 degree rotation is a transpose plus a row reversal (non-square content, square frame)', () => {
    const [h, w] = [9, 9];
    const input = randomImages(1, h, w, 11);
    const out = run(input, [1, h, w, 1], (x) => applyAugmentParams(x, [{ ...IDENTITY, rotation: 90 }], { rotation: 90 }));
    const expected = run(input, [1, h, w, 1], (x) => tf.reverse(tf.transpose(x, [0, 2, 1, 3]), 1));
    expect(maxAbsDiff(out, expected)).toBeLessThan(1e-5);
    // Counter-clockwise on screen: the top-left pixel ends up bottom-left.
    expect(out[(h - 1) * w]).toBeCloseTo(input[0], 5);
  });

  it('brightness shifts each image by one factor within the range and clips to [0,1]', () => {
    const [n, h, w] = [40, 4, 4];
    const input = new Float32Array(n * h * w).fill(0.5);
    for (let i = n / 2; i < n; i++) input.fill(1, i * h * w, (i + 1) * h * w); // second half saturated
    const out = run(input, [n, h, w, 1], (x) => augmentBatch(x, { brightness: 0.1 }, makeRng(3)));
    const shifts: number[] = [];
    for (let i = 0; i < n; i++) {
      const img = out.subarray(i * h * w, (i + 1) * h * w);
      expect(Math.max(...img) - Math.min(...img)).toBeLessThan(1e-6); // one factor per image
      if (i < n / 2) {
        expect(Math.abs(img[0] - 0.5)).toBeLessThanOrEqual(0.1 + 1e-6);
        shifts.push(img[0] - 0.5);
      } else {
        expect(img[0]).toBeLessThanOrEqual(1);
        expect(img[0]).toBeGreaterThanOrEqual(0.9 - 1e-6);
      }
    }
    expect(Math.min(...shifts)).toBeLessThan(-0.03);
    expect(Math.max(...shifts)).toBeGreaterThan(0.03);
  });

  it('contrast scales deviations from the image mean and keeps the mean', () => {
    const [h, w] = [4, 4];
    const input = new Float32Array(h * w).map((_, i) => (i % 2 === 0 ? 0.4 : 0.6));
    const out = run(input, [1, h, w, 1], (x) => applyAugmentParams(x, [{ ...IDENTITY, contrast: 1.5 }], { contrast: 0.5 }));
    for (let i = 0; i < h * w; i++) expect(out[i]).toBeCloseTo(i % 2 === 0 ? 0.35 : 0.65, 6);
  });

  it('is reproducible from the seed and differs between seeds', () => {
    const [n, h, w] = [4, 16, 16];
    const input = randomImages(n, h, w, 4);
    const cfg: AugmentConfig = { zoom: 0.3, rotation: 10, widthShift: 0.1, hflip: true, vflip: true, brightness: 0.1, contrast: 0.1 };
    const a = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(123)));
    const b = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(123)));
    const c = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(124)));
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(maxAbsDiff(a, c)).toBeGreaterThan(0.05);
  });

  it('an empty config returns an exact copy in a new tensor', () => {
    const input = randomImages(3, 5, 6, 8);
    const x = tf.tensor4d(input, [3, 5, 6, 1]);
    for (const cfg of [NO_AUGMENT, parseAugment('none'), { zoom: 0, vflip: false }]) {
      const y = augmentBatch(x, cfg, makeRng(1));
      expect(y).not.toBe(x);
      expect(Array.from(y.dataSync())).toEqual(Array.from(input));
      y.dispose();
    }
    expect(Array.from(x.dataSync())).toEqual(Array.from(input)); // input untouched
    x.dispose();
  });

  it('does not modify its input and leaks no tensors', () => {
    const input = randomImages(4, 12, 10, 6);
    const x = tf.tensor4d(input, [4, 12, 10, 1]);
    const before = tf.memory().numTensors;
    const configs: AugmentConfig[] = [
      SEED_AUGMENT,
      { brightness: 0.2 },
      { contrast: 0.2 },
      { zoom: 0.2, rotation: 20, widthShift: 0.1, heightShift: 0.1, hflip: true, vflip: true, brightness: 0.1, contrast: 0.1 },
      {},
    ];
    for (const cfg of configs) augmentBatch(x, cfg, makeRng(2)).dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(Array.from(x.dataSync())).toEqual(Array.from(input));
    x.dispose();
  });
});

describe('cpu and wasm agree', () => {
  it('full augmentation of a non-square batch matches within 1e-5', async () => {
    const [n, h, w] = [12, 23, 31];
    const input = randomImages(n, h, w, 77);
    const cfg: AugmentConfig = {
      zoom: 0.3,
      rotation: 25,
      widthShift: 0.15,
      heightShift: 0.1,
      hflip: true,
      vflip: true,
      brightness: 0.2,
      contrast: 0.3,
      gamma: 0.3,
      blur: 1.5,
      noise: 0.05,
    };
    const results: Record<string, Float32Array> = {};
    for (const backend of BACKENDS) {
      await useBackend(backend);
      results[backend] = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(2024)));
      // Geometry alone too, so a clip cannot hide a warp difference.
      results[`${backend}-geometry`] = run(input, [n, h, w, 1], (x) =>
        augmentBatch(
          x,
          { ...cfg, brightness: undefined, contrast: undefined, gamma: undefined, blur: undefined, noise: undefined },
          makeRng(2024),
        ),
      );
    }
    await useBackend('cpu');
    expect(maxAbsDiff(results.cpu, results.wasm)).toBeLessThan(1e-5);
    expect(maxAbsDiff(results['cpu-geometry'], results['wasm-geometry'])).toBeLessThan(1e-5);
    // And the augmentation really changed every image (the tfjs cpu Transform kernel only warps image 0).
    for (let i = 0; i < n; i++) {
      expect(maxAbsDiff(results.cpu.subarray(i * h * w, (i + 1) * h * w), input.subarray(i * h * w, (i + 1) * h * w))).toBeGreaterThan(
        0.05,
      );
    }
  });
});

describe('backends built from the cpu kernels (like the optional native backend)', () => {
  it('also avoid the cpu Transform kernel, which only warps the first image of a batch', async () => {
    const name = 'cpu-derived-test';
    tf.registerBackend(name, () => new MathBackendCPU(), 0);
    for (const config of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...config, backendName: name });
    const [n, h, w] = [5, 9, 11];
    const input = randomImages(n, h, w, 31);
    const cfg: AugmentConfig = { zoom: 0.3, rotation: 20, vflip: true, brightness: 0.1 };
    await useBackend('cpu');
    const onCpu = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(8)));
    await tf.setBackend(name);
    const onDerived = run(input, [n, h, w, 1], (x) => augmentBatch(x, cfg, makeRng(8)));
    // What the inherited kernel does to image 1 of a batch, to show the test would catch its use.
    const raw = run(input, [n, h, w, 1], (x) => tf.image.transform(x, tf.tensor2d([[1, 0, 1, 0, 1, 0, 0, 0]]).tile([n, 1]) as tf.Tensor2D));
    await useBackend('cpu');
    tf.removeBackend(name);
    expect(Array.from(onDerived)).toEqual(Array.from(onCpu));
    expect(
      Math.max(...raw.subarray(h * w, 2 * h * w)),
      'tfjs cpu Transform now warps whole batches: the JS path in augment.ts may be unnecessary (still correct)',
    ).toBe(0);
  });
});

describe('warpBilinearNearest', () => {
  it('warps each channel of a multi-channel image like the single-channel path', () => {
    const [n, h, w, c] = [2, 8, 10, 3];
    const rgb = randomImages(n, h, w * c, 12); // n x h x w x c interleaved
    const transforms = new Float32Array(n * 8);
    sampleAugmentParams({ zoom: 0.3, rotation: 30, widthShift: 0.2, hflip: true }, makeRng(4), n, h, w).forEach((p, i) =>
      transforms.set(transformFor(p, h, w), i * 8),
    );
    const warped = warpBilinearNearest(rgb, [n, h, w, c], transforms);
    for (let ch = 0; ch < c; ch++) {
      const plane = rgb.filter((_, i) => i % c === ch);
      const expected = warpBilinearNearest(plane, [n, h, w, 1], transforms);
      expect(Array.from(warped.filter((_, i) => i % c === ch))).toEqual(Array.from(expected));
    }
  });

  it('refuses projective transforms it does not implement', () => {
    const t = Float32Array.from([1, 0, 0, 0, 1, 0, 0.01, 0]);
    expect(() => warpBilinearNearest(new Float32Array(4), [1, 2, 2, 1], t)).toThrow(/only affine/);
  });
});
