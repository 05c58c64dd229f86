import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fsp, existsSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { spawn } from 'child_process';
import type { ImageRecord, Label, Split } from '../src/types';
import { decodeImages, decodeFile, decodeSplit, resizeGray, sniffImageHeader, nativeJpeg } from '../src/data/decode';
import { discoverDataset } from '../src/data/discover';

const repoRoot = path.resolve(__dirname, '..');
const sharedData = process.env.PNEUMO_SHARED_DATA ?? path.resolve(repoRoot, '../shared/data/chest_xray');
const hasShared = existsSync(path.join(sharedData, 'train'));

let tmp: string;
const rec = (file: string, label: Label = 'NORMAL'): ImageRecord => ({
  path: path.join(tmp, file),
  label,
  patient: path.basename(file),
  source: 'train',
});

/** A horizontal gradient with a bright square, so resizing and channel handling show in the pixels. */
function testPattern(width: number, height: number, channels: 1 | 3 | 4): Buffer {
  const buf = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = Math.round((x / (width - 1)) * 200) + (x < width / 4 && y < height / 4 ? 55 : 0);
      for (let c = 0; c < channels; c++) buf[(y * width + x) * channels + c] = c === 3 ? 255 : v;
    }
  }
  return buf;
}

/** Minimal PNG whose IHDR claims the given size: enough for the header check, no 400-megapixel file. */
function pngHeaderClaiming(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  const chunk = Buffer.concat([Buffer.from([0, 0, 0, 13]), Buffer.from('IHDR'), ihdr, Buffer.alloc(4)]);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk, Buffer.alloc(64)]);
}

const good = ['rgb.jpeg', 'gray.jpeg', 'cmyk.jpeg', 'rgb.png', 'rgba.png', 'palette.png', 'gray16.png', 'wide.png', 'big.jpeg'];
const bad = ['zero.jpeg', 'text.jpeg', 'truncated.jpeg', 'corrupt.png', 'huge.png', 'missing.jpeg'];

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'decode-'));
  const raw = (w: number, h: number, c: 1 | 3 | 4) => sharp(testPattern(w, h, c), { raw: { width: w, height: h, channels: c } });
  await raw(224, 224, 3).jpeg({ quality: 95 }).toFile(path.join(tmp, 'rgb.jpeg'));
  await raw(224, 224, 1).jpeg({ quality: 95 }).toFile(path.join(tmp, 'gray.jpeg'));
  await raw(224, 224, 3).toColourspace('cmyk').jpeg({ quality: 95 }).toFile(path.join(tmp, 'cmyk.jpeg'));
  await raw(224, 224, 3).png().toFile(path.join(tmp, 'rgb.png'));
  await raw(224, 224, 4).png().toFile(path.join(tmp, 'rgba.png'));
  await raw(224, 224, 3).png({ palette: true, colours: 256 }).toFile(path.join(tmp, 'palette.png'));
  await raw(224, 224, 1).toColourspace('grey16').png().toFile(path.join(tmp, 'gray16.png'));
  await raw(1000, 300, 3).png().toFile(path.join(tmp, 'wide.png'));
  await raw(2240, 2240, 3).jpeg({ quality: 90 }).toFile(path.join(tmp, 'big.jpeg'));
  await fsp.writeFile(path.join(tmp, 'zero.jpeg'), Buffer.alloc(0));
  await fsp.writeFile(path.join(tmp, 'text.jpeg'), 'this is not an image\n');
  const jpeg = await fsp.readFile(path.join(tmp, 'rgb.jpeg'));
  await fsp.writeFile(path.join(tmp, 'truncated.jpeg'), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  const png = await fsp.readFile(path.join(tmp, 'rgb.png'));
  const corrupt = Buffer.from(png);
  corrupt.fill(0x5a, 60, corrupt.length - 20); // keep the header, garble the compressed data
  await fsp.writeFile(path.join(tmp, 'corrupt.png'), corrupt);
  await fsp.writeFile(path.join(tmp, 'huge.png'), pngHeaderClaiming(20001, 20001));
});
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe('formats', () => {
  it('sniffs formats and sizes from headers', async () => {
    expect(sniffImageHeader(await fsp.readFile(path.join(tmp, 'wide.png')))).toMatchObject({ format: 'png', width: 1000, height: 300 });
    expect(sniffImageHeader(await fsp.readFile(path.join(tmp, 'cmyk.jpeg')))).toMatchObject({ format: 'jpeg', width: 224, channels: 4 });
    expect(sniffImageHeader(await fsp.readFile(path.join(tmp, 'gray16.png')))).toMatchObject({ bitDepth: 16, channels: 1 });
    expect(sniffImageHeader(Buffer.from('hello'))).toBeNull();
  });

  it('decodes every colour mode and bit depth to the same grayscale picture', async () => {
    const reference = await decodeFile(path.join(tmp, 'rgb.png'), { size: 64 });
    expect(reference).toHaveLength(64 * 64);
    // The pattern: dark left edge, bright right edge, bright top-left square.
    expect(reference[32 * 64 + 2]).toBeLessThan(30);
    expect(reference[32 * 64 + 61]).toBeGreaterThan(180);
    expect(reference[2 * 64 + 2]).toBeGreaterThan(45);
    for (const file of ['rgb.jpeg', 'gray.jpeg', 'cmyk.jpeg', 'rgba.png', 'palette.png', 'gray16.png', 'big.jpeg']) {
      const pixels = await decodeFile(path.join(tmp, file), { size: 64 });
      let worst = 0;
      for (let i = 0; i < pixels.length; i++) worst = Math.max(worst, Math.abs(pixels[i] - reference[i]));
      // JPEG/CMYK round trips and palette quantisation cost a few levels; anything larger is a bug.
      expect(worst, file).toBeLessThanOrEqual(file === 'cmyk.jpeg' ? 30 : 12);
    }
  });

  it('fits a 1000x300 image by fill, cover and contain', async () => {
    const file = path.join(tmp, 'wide.png');
    const fill = await decodeFile(file, { size: 50, fit: 'fill' });
    const cover = await decodeFile(file, { size: 50, fit: 'cover' });
    const contain = await decodeFile(file, { size: 50, fit: 'contain' });
    // fill keeps the whole gradient; cover crops to the middle third; contain pads top and bottom with black.
    expect(fill[25 * 50 + 1]).toBeLessThan(15);
    expect(cover[25 * 50 + 1]).toBeGreaterThan(50);
    expect(cover[25 * 50 + 48]).toBeLessThan(150);
    expect(contain[0 * 50 + 49]).toBe(0);
    expect(contain[25 * 50 + 48]).toBeGreaterThan(180);
  });

  it('resizeGray keeps a constant image constant and averages when shrinking', () => {
    const flat = new Uint8Array(37 * 23).fill(77);
    expect(new Set(resizeGray(flat, 37, 23, 10, 'fill'))).toEqual(new Set([77]));
    const stripes = Uint8Array.from({ length: 40 * 40 }, (_, i) => (i % 2 ? 255 : 0));
    const small = resizeGray(stripes, 40, 40, 10, 'fill');
    for (const v of small) expect(Math.abs(v - 128)).toBeLessThan(20); // antialiased, not aliased to 0 or 255
  });
});

describe('decodeImages', () => {
  it('skips bad files with reasons naming the problem, keeps order, reports on stderr', async () => {
    const records = [...good, ...bad].map((f, i) => rec(f, i % 2 ? 'PNEUMONIA' : 'NORMAL'));
    const interleaved = records.slice().sort((a, b) => (a.path < b.path ? -1 : 1));
    const d = await decodeImages(interleaved, { size: 32, cacheDir: null });
    expect(d.records.map((r) => path.basename(r.path))).toEqual(
      interleaved.map((r) => path.basename(r.path)).filter((f) => good.includes(f)),
    );
    expect(d.pixels).toHaveLength(good.length * 32 * 32);
    expect(Array.from(d.labels)).toEqual(d.records.map((r) => (r.label === 'PNEUMONIA' ? 1 : 0)));
    const reasons = Object.fromEntries(d.skipped.map((s) => [path.basename(s.path), s.reason]));
    expect(Object.keys(reasons).sort()).toEqual(bad.slice().sort());
    expect(reasons['zero.jpeg']).toMatch(/empty file/);
    expect(reasons['text.jpeg']).toMatch(/not a JPEG or PNG.*this is not an image/);
    expect(reasons['truncated.jpeg'], reasons['truncated.jpeg']).toMatch(/truncated/);
    expect(reasons['corrupt.png']).toMatch(/corrupt|truncated/);
    expect(reasons['huge.png']).toMatch(/20001x20001 pixels, over the 20000x20000 limit/);
    expect(reasons['missing.jpeg']).toMatch(/cannot read file.*ENOENT/);
  });

  it('handles an empty record list', async () => {
    const d = await decodeImages([], { cacheDir: null });
    expect(d.records).toEqual([]);
    expect(d.pixels).toHaveLength(0);
    expect(d.skipped).toEqual([]);
  });

  it('decodeFile throws a clear error naming a bad file', async () => {
    await expect(decodeFile(path.join(tmp, 'text.jpeg'))).rejects.toThrow(/Cannot decode image .*text.jpeg: not a JPEG or PNG/);
    await expect(decodeFile(path.join(tmp, 'missing.jpeg'))).rejects.toThrow(/Cannot read image .*missing.jpeg/);
  });

  it('caches: a second load is a hit with identical pixels; touching a file invalidates', async () => {
    const cacheDir = path.join(tmp, 'cache');
    const records = good.map((f) => rec(f));
    const seen: number[] = [];
    const first = await decodeImages(records, { size: 40, cacheDir, progress: (done) => seen.push(done) });
    expect(seen.at(-1)).toBe(records.length);
    expect((await fsp.readdir(cacheDir)).filter((f) => f.endsWith('.bin'))).toHaveLength(1);

    const calls: number[] = [];
    const second = await decodeImages(records, { size: 40, cacheDir, progress: (d) => calls.push(d) });
    expect(calls).toEqual([]); // nothing decoded
    expect(Buffer.from(second.pixels).equals(Buffer.from(first.pixels))).toBe(true);
    expect(second.records).toEqual(first.records);

    // Another order of the same files (e.g. a split with another seed) is served by the same cache entry.
    const reversed = await decodeImages(records.slice().reverse(), { size: 40, cacheDir, progress: (d) => calls.push(d) });
    expect(calls).toEqual([]);
    const n = records.length;
    for (let k = 0; k < n; k++) {
      const a = reversed.pixels.subarray(k * 1600, (k + 1) * 1600);
      const b = first.pixels.subarray((n - 1 - k) * 1600, (n - k) * 1600);
      expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    }
    expect((await fsp.readdir(cacheDir)).filter((f) => f.endsWith('.bin'))).toHaveLength(1);

    // A damaged cache file is ignored and rewritten, not trusted.
    const [cacheName] = (await fsp.readdir(cacheDir)).filter((f) => f.endsWith('.bin'));
    await fsp.truncate(path.join(cacheDir, cacheName), 100);
    const repaired = await decodeImages(records, { size: 40, cacheDir, progress: (d) => calls.push(d) });
    expect(calls.at(-1)).toBe(records.length);
    expect(Buffer.from(repaired.pixels).equals(Buffer.from(first.pixels))).toBe(true);
    calls.length = 0;

    // Another size or fit is another cache entry.
    await decodeImages(records, { size: 41, cacheDir });
    expect((await fsp.readdir(cacheDir)).filter((f) => f.endsWith('.bin'))).toHaveLength(2);

    // Rewriting a file with other content and a new mtime must not serve stale pixels.
    const target = path.join(tmp, 'rgb.png');
    await sharp({ create: { width: 224, height: 224, channels: 3, background: '#ffffff' } })
      .png()
      .toFile(target);
    const later = new Date(Date.now() + 5000);
    await fsp.utimes(target, later, later);
    const third = await decodeImages(records, { size: 40, cacheDir, progress: (d) => calls.push(d) });
    expect(calls.length).toBeGreaterThan(0);
    const idx = records.findIndex((r) => r.path === target);
    expect(third.pixels[idx * 1600 + 820]).toBe(255);
    expect(first.pixels[idx * 1600 + 820]).not.toBe(255);
  });

  it('decodeSplit decodes all parts once and slices them', async () => {
    const split: Split = {
      train: [rec('rgb.jpeg'), rec('text.jpeg')],
      val: [rec('gray.jpeg', 'PNEUMONIA')],
      test: [rec('wide.png'), rec('palette.png')],
      seed: 1,
      testSource: 'carved',
    };
    const parts = await decodeSplit(split, { size: 16, cacheDir: path.join(tmp, 'cache2') });
    expect(parts.train.records.map((r) => path.basename(r.path))).toEqual(['rgb.jpeg']);
    expect(parts.train.skipped.map((s) => path.basename(s.path))).toEqual(['text.jpeg']);
    expect(Array.from(parts.val.labels)).toEqual([1]);
    expect(parts.test.pixels).toHaveLength(2 * 256);
    expect(Buffer.from(parts.test.pixels.subarray(256)).equals(Buffer.from(await decodeFile(rec('palette.png').path, { size: 16 })))).toBe(
      true,
    );
  });
});

const hasNative = nativeJpeg() !== null;

const distDecode = path.join(repoRoot, 'dist', 'data', 'decode.js');

describe('two runs sharing one decode cache', () => {
  it.skipIf(!existsSync(distDecode))(
    'decode into the same cache at once: both get the right pixels, one whole cache file, no temp files left',
    async () => {
      const cacheDir = path.join(tmp, 'shared-by-two');
      const records = good.map((f) => rec(f));
      const reference = await decodeImages(records, { size: 40, cacheDir: null });
      const expected = Buffer.from(reference.pixels).toString('base64');
      // Each process decodes three times; the first pass of both writes the same cache file at the same moment.
      const script = `
      const { decodeImages } = require(${JSON.stringify(distDecode)});
      (async () => {
        const out = [];
        for (let i = 0; i < 3; i++) {
          const d = await decodeImages(${JSON.stringify(records)}, { size: 40, cacheDir: ${JSON.stringify(cacheDir)} });
          out.push(Buffer.from(d.pixels).toString('base64'));
        }
        process.stdout.write(JSON.stringify(out));
      })().catch((e) => { console.error(e); process.exit(1); });`;
      const run = () =>
        new Promise<{ out: string; err: string }>((resolve, reject) => {
          const child = spawn(process.execPath, ['-e', script]);
          let out = '';
          let err = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (err += d));
          child.on('exit', (code) => (code === 0 ? resolve({ out, err }) : reject(new Error(`decoder process failed: ${err}`))));
        });
      const results = await Promise.all([run(), run()]);
      for (const r of results) {
        expect(r.err).not.toMatch(/could not write cache/);
        expect(JSON.parse(r.out)).toEqual([expected, expected, expected]);
      }
      const names = await fsp.readdir(cacheDir);
      expect(names.filter((n) => n.endsWith('.tmp'))).toEqual([]);
      expect(names.filter((n) => n.endsWith('.bin'))).toHaveLength(1);
      const again = await decodeImages(records, {
        size: 40,
        cacheDir,
        progress: () => {
          throw new Error('cache miss: the shared cache file was not whole');
        },
      });
      expect(Buffer.from(again.pixels).toString('base64')).toBe(expected);
    },
    60_000,
  );
});

describe.skipIf(!hasNative)('native libjpeg-turbo fast path (skipped unless built: npm run build:jpeg)', () => {
  function maxDiff(a: Uint8Array, b: Uint8Array): number {
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    return worst;
  }

  it('agrees with the sharp path within one grey level on plain JPEGs, and falls back for the rest', async () => {
    for (const file of ['rgb.jpeg', 'gray.jpeg', 'cmyk.jpeg', 'rgb.png']) {
      for (const fit of ['fill', 'cover', 'contain'] as const) {
        const fast = await decodeFile(path.join(tmp, file), { size: 57, fit });
        const slow = await decodeFile(path.join(tmp, file), { size: 57, fit, native: false });
        // Synthetic hard edges: Y-only decode vs RGB-then-luma rounding differs by a few levels at most.
        expect(maxDiff(fast, slow), `${file} ${fit}`).toBeLessThanOrEqual(3);
      }
    }
    // Large input: DCT-domain shrink vs libvips pre-shrink, both then antialiased: close, not identical.
    const fast = await decodeFile(path.join(tmp, 'big.jpeg'), { size: 57 });
    const slow = await decodeFile(path.join(tmp, 'big.jpeg'), { size: 57, native: false });
    expect(maxDiff(fast, slow)).toBeLessThanOrEqual(6);
  });

  it.skipIf(!hasShared)('matches the sharp path on shared images', async () => {
    const ds = await discoverDataset(sharedData);
    const sample = ds.images.filter((_, i) => i % 200 === 0);
    const fast = await decodeImages(sample, { cacheDir: null });
    const slow = await decodeImages(sample, { cacheDir: null, native: false });
    expect(fast.records).toEqual(slow.records);
    expect(maxDiff(fast.pixels, slow.pixels)).toBeLessThanOrEqual(1);
  });
});

describe.skipIf(!hasShared)(`shared data at ${sharedData}`, () => {
  it('decodes a sample of the shared training images without skips', async () => {
    const ds = await discoverDataset(sharedData);
    const sample = ds.images.filter((_, i) => i % 50 === 0);
    const d = await decodeImages(sample, { cacheDir: null });
    expect(d.skipped).toEqual([]);
    expect(d.pixels).toHaveLength(sample.length * 150 * 150);
    const mean = d.pixels.reduce((s, v) => s + v, 0) / d.pixels.length;
    expect(mean).toBeGreaterThan(60);
    expect(mean).toBeLessThan(200);
  });

  it('loads all training images from a warm cache in about a second', async () => {
    const ds = await discoverDataset(sharedData);
    const train = ds.images.filter((r) => r.source === 'train');
    const cacheDir = path.join(tmp, 'shared-cache');
    const cold = await decodeImages(train, { cacheDir });
    const start = performance.now();
    const warm = await decodeImages(train, { cacheDir });
    const seconds = (performance.now() - start) / 1000;
    console.log(`warm load of ${train.length} images: ${seconds.toFixed(3)} s`);
    expect(warm.records).toHaveLength(train.length);
    expect(Buffer.from(warm.pixels).equals(Buffer.from(cold.pixels))).toBe(true);
    expect(seconds).toBeLessThan(3); // about 0.2 s idle; generous for a loaded shared machine
  });
});
