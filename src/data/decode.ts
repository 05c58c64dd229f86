/**
 * Decodes image files to grayscale `size x size` Uint8 pixels, fast, with an on-disk cache.
 *
 * Two paths, measured on the 224x224 Kaggle JPEGs on 2 cores (see `npm run bench:data`):
 * - Native fast path (optional addon in src/data/native, built by `npm run build:jpeg`):
 *   libjpeg-turbo decodes plain 8-bit JPEGs straight to luma (no chroma work) and resizes in C, in batches on
 *   the libuv pool; about 2x PIL's single-thread speed here.
 * - General path (everything else, and everything when the addon is absent): sharp decodes to raw 8-bit pixels
 *   (pre-shrunk by libvips for large inputs) and the luma conversion and resize run in JS. libvips' own
 *   per-image resize pipeline costs more than the decode, which is why it is not used for the resize.
 * Both paths share one resize algorithm (same double arithmetic), so they agree to within one grey level.
 *
 * Pixel semantics (chosen to match PIL, i.e. Keras' loader, as closely as is cheap):
 * - grayscale is ITU-R 601 luma, PIL's fixed-point formula; alpha is ignored (as PIL's convert('L'));
 *   CMYK, palette and 16-bit inputs are converted to 8-bit sRGB by libvips first;
 * - resizing is separable triangle (bilinear) filtering widened by the scale factor when shrinking, like
 *   PIL's Image.resize(BILINEAR), so downscaling is antialiased;
 * - EXIF orientation is not applied (neither PIL nor Keras applies it).
 *
 * Bad files (empty, not an image, truncated, corrupt, over 20000x20000 pixels) are skipped with a reason and
 * reported in one line on stderr at the end; decodeImages never throws for a bad image.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import * as crypto from 'crypto';
import sharp from 'sharp';
import { SingleBar, Presets } from 'cli-progress';
import type { DecodedImages, ImageRecord, SkippedFile, Split, SplitName } from '../types';

export type ResizeFit = 'fill' | 'cover' | 'contain';

export interface DecodeOptions {
  /** Output side in pixels; default 150. */
  size?: number;
  /** 'fill' stretches (like Keras flow_from_directory), 'cover' centre-crops, 'contain' pads with black. */
  fit?: ResizeFit;
  /** Cache folder (default 'outputs/cache' relative to cwd); null disables the cache. */
  cacheDir?: string | null;
  /** true: a progress bar on stderr when it is a terminal; or a callback. */
  progress?: boolean | ((done: number, total: number) => void);
  /** Decodes in flight at once on the sharp path; default 4 x the libuv pool size. */
  concurrency?: number;
  /** Use the native libjpeg-turbo fast path when it is built (default true); false forces sharp. */
  native?: boolean;
}

/** Largest accepted input, per side squared: beyond it an image is skipped rather than decoded. */
export const MAX_INPUT_SIDE = 20000;
const MAX_INPUT_PIXELS = MAX_INPUT_SIDE * MAX_INPUT_SIDE;
/** Inputs larger than this many times the output side are pre-shrunk by libvips (JPEG shrink-on-load). */
const PRESHRINK_FACTOR = 2;
/** Bump when decoding semantics change, so stale caches are not reused. */
const CACHE_VERSION = 1;
const CACHE_MAGIC = 'PXCACHE1';

// Parallelism comes from many images in flight, each on one libvips thread; per-image threading only adds
// overhead on 224x224 inputs. libvips' operation cache is useless here (every file is read once).
sharp.cache(false);
sharp.concurrency(1);

/** The optional native addon (src/data/native, libjpeg-turbo): batch-decodes plain JPEGs straight to luma. */
interface NativeJpeg {
  decodeBatch(paths: string[], size: number, fit: number): Promise<{ pixels: Buffer; ok: Buffer }>;
  libjpeg: string;
}

const FIT_CODES: Record<ResizeFit, number> = { fill: 0, cover: 1, contain: 2 };
const NATIVE_BATCH = 32;
let nativeAddon: NativeJpeg | null | undefined;

/**
 * Loads the addon once if it was built (`npm run build:jpeg`); without it everything goes
 * through sharp, slower but the same pixels to within one grey level. PNEUMO_NATIVE_JPEG=0 turns it off.
 */
export function nativeJpeg(): NativeJpeg | null {
  if (nativeAddon !== undefined) return nativeAddon;
  nativeAddon = null;
  if (process.env.PNEUMO_NATIVE_JPEG === '0') return null;
  const candidates = [
    path.join(__dirname, 'native', 'build', 'Release', 'jpeg_gray.node'), // running from src/ (vitest, tslab)
    path.join(__dirname, '..', '..', 'src', 'data', 'native', 'build', 'Release', 'jpeg_gray.node'), // from dist/
  ];
  for (const file of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      nativeAddon = require(file) as NativeJpeg;
      break;
    } catch {
      // not built here, or built for another platform: fall back to sharp
    }
  }
  return nativeAddon;
}

/** Which decoder handles JPEGs in this process (for benchmarks and reports). */
export function decodeBackend(native = true): string {
  const general = `sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}) + JS luma/resize`;
  const addon = native ? nativeJpeg() : null;
  return addon ? `native ${addon.libjpeg} for plain JPEGs, else ${general}` : general;
}

// ---------------------------------------------------------------------------------------------------------
// Header sniffing: rejects non-images and oversize images before handing them to libvips.

export interface ImageHeader {
  format: 'jpeg' | 'png';
  width: number;
  height: number;
  channels: number;
  bitDepth: number;
}

function pngHeader(buf: Uint8Array): ImageHeader | null {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (buf.length < 26 || !sig.every((b, i) => buf[i] === b)) return null;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const colorType = buf[25];
  const channels = ({ 0: 1, 2: 3, 3: 3, 4: 2, 6: 4 } as Record<number, number>)[colorType] ?? 0;
  return { format: 'png', width: view.getUint32(16), height: view.getUint32(20), channels, bitDepth: buf[24] };
}

function jpegHeader(buf: Uint8Array): ImageHeader | null {
  if (buf.length < 4 || buf[0] !== 0xff || buf[1] !== 0xd8) return null;
  let i = 2;
  while (i + 3 < buf.length) {
    if (buf[i] !== 0xff) return null;
    const marker = buf[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      i += 2;
      continue;
    }
    const length = (buf[i + 2] << 8) | buf[i + 3];
    const isStartOfFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isStartOfFrame) {
      if (i + 9 >= buf.length) return null;
      return {
        format: 'jpeg',
        bitDepth: buf[i + 4],
        height: (buf[i + 5] << 8) | buf[i + 6],
        width: (buf[i + 7] << 8) | buf[i + 8],
        channels: buf[i + 9],
      };
    }
    if (marker === 0xda || marker === 0xd9) return null;
    i += 2 + length;
  }
  return null;
}

/** Format and dimensions from the first bytes, or null when the content is neither JPEG nor PNG. */
export function sniffImageHeader(buf: Uint8Array): ImageHeader | null {
  return pngHeader(buf) ?? jpegHeader(buf);
}

function describeContent(buf: Uint8Array): string {
  const head = Buffer.from(buf.subarray(0, 32));
  const printable = /^[\x20-\x7e\r\n\t]*$/.test(head.toString('latin1'));
  return printable ? `text "${head.toString('latin1').replace(/\s+/g, ' ').trim()}..."` : `bytes ${head.subarray(0, 8).toString('hex')}`;
}

/** A bad image: the message is the user-facing skip reason. */
export class ImageDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageDecodeError';
  }
}

// ---------------------------------------------------------------------------------------------------------
// Luma and resize in JS.

/** ITU-R 601 luma with PIL's 16-bit fixed-point weights and rounding; alpha is ignored. */
function toLuma(data: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 1) return data;
  const out = new Uint8Array(pixels);
  if (channels >= 3) {
    for (let p = 0, s = 0; p < pixels; p++, s += channels) {
      out[p] = (data[s] * 19595 + data[s + 1] * 38470 + data[s + 2] * 7471 + 0x8000) >>> 16;
    }
  } else {
    for (let p = 0, s = 0; p < pixels; p++, s += channels) out[p] = data[s];
  }
  return out;
}

/** Filter taps for one axis: for each output sample, the first input index and its normalised weights. */
interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  /** `maxTaps` weights per output sample. */
  weights: Float64Array;
  maxTaps: number;
}

const weightCache = new Map<string, AxisWeights>();

/**
 * Triangle filter mapping input span [from, from+span) onto `outLen` samples, widened by the scale factor when
 * shrinking (antialiasing), as PIL's bilinear resize does.
 */
function axisWeights(inLen: number, from: number, span: number, outLen: number): AxisWeights {
  const key = `${inLen}:${from}:${span}:${outLen}`;
  const cached = weightCache.get(key);
  if (cached) return cached;
  const scale = span / outLen;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // triangle support 1, widened
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outLen);
  const count = new Int32Array(outLen);
  const weights = new Float64Array(outLen * maxTaps);
  for (let o = 0; o < outLen; o++) {
    const centre = from + (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(centre - support));
    const hi = Math.min(inLen, Math.ceil(centre + support));
    let total = 0;
    let n = 0;
    for (let i = lo; i < hi && n < maxTaps; i++, n++) {
      const w = Math.max(0, 1 - Math.abs((i + 0.5 - centre) / filterScale));
      weights[o * maxTaps + n] = w;
      total += w;
    }
    if (total > 0) for (let k = 0; k < n; k++) weights[o * maxTaps + k] /= total;
    start[o] = lo;
    count[o] = n;
  }
  const result = { start, count, weights, maxTaps };
  if (weightCache.size > 256) weightCache.clear();
  weightCache.set(key, result);
  return result;
}

/** Where the input lands in the output square: a source crop and a destination rectangle. */
function placement(w: number, h: number, size: number, fit: ResizeFit) {
  if (fit === 'fill') return { sx: 0, sy: 0, sw: w, sh: h, dx: 0, dy: 0, dw: size, dh: size };
  if (fit === 'cover') {
    const side = Math.min(w, h);
    return { sx: (w - side) / 2, sy: (h - side) / 2, sw: side, sh: side, dx: 0, dy: 0, dw: size, dh: size };
  }
  const scale = size / Math.max(w, h);
  const dw = Math.max(1, Math.round(w * scale));
  const dh = Math.max(1, Math.round(h * scale));
  return { sx: 0, sy: 0, sw: w, sh: h, dx: Math.floor((size - dw) / 2), dy: Math.floor((size - dh) / 2), dw, dh };
}

/**
 * Separable resize of a grayscale image into a size x size square (black outside the placed area).
 * Vertical pass first: it walks whole rows contiguously and leaves fewer rows for the horizontal pass.
 */
export function resizeGray(src: Uint8Array, w: number, h: number, size: number, fit: ResizeFit): Uint8Array {
  const out = new Uint8Array(size * size);
  const p = placement(w, h, size, fit);
  const xw = axisWeights(w, p.sx, p.sw, p.dw);
  const yw = axisWeights(h, p.sy, p.sh, p.dh);
  const colLo = xw.start[0];
  const colHi = xw.start[p.dw - 1] + xw.count[p.dw - 1];
  const span = colHi - colLo;
  const row = new Float64Array(span);
  for (let y = 0; y < p.dh; y++) {
    row.fill(0);
    const base = y * yw.maxTaps;
    const n = yw.count[y];
    for (let k = 0; k < n; k++) {
      const weight = yw.weights[base + k];
      const srcRow = (yw.start[y] + k) * w + colLo;
      for (let x = 0; x < span; x++) row[x] += src[srcRow + x] * weight;
    }
    const outRow = (p.dy + y) * size + p.dx;
    for (let x = 0; x < p.dw; x++) {
      const first = xw.start[x] - colLo;
      const wb = x * xw.maxTaps;
      const m = xw.count[x];
      let acc = 0;
      for (let k = 0; k < m; k++) acc += row[first + k] * xw.weights[wb + k];
      out[outRow + x] = acc <= 0 ? 0 : acc >= 255 ? 255 : Math.round(acc);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// One image.

/** Whether the file stops before its format's end marker (JPEG EOI, PNG IEND), i.e. it was cut short. */
function looksTruncated(buf: Uint8Array, header: ImageHeader): boolean {
  const tail = Buffer.from(buf.subarray(Math.max(0, buf.length - 64)));
  if (header.format === 'png') return tail.indexOf('IEND', 0, 'latin1') < 0;
  for (let i = tail.length - 2; i >= 0; i--) if (tail[i] === 0xff && tail[i + 1] === 0xd9) return false;
  return true;
}

/**
 * A skip reason from a libvips failure. libvips' error text is process-global, so with many decodes in flight
 * it can come back as "Unknown error"; the end-marker check gives a reliable reason for the common case.
 */
function sharpReason(err: unknown, buf: Uint8Array, header: ImageHeader): string {
  const msg = (err as Error)?.message ?? String(err);
  if (/premature end|truncat/i.test(msg) || looksTruncated(buf, header)) {
    return `truncated image (the file ends before the ${header.format.toUpperCase()} end marker; ${msg})`;
  }
  if (/pixel limit/i.test(msg)) return `image is larger than ${MAX_INPUT_SIDE}x${MAX_INPUT_SIDE} pixels (${msg})`;
  return `corrupt or unreadable image (${msg})`;
}

/** Decodes an in-memory JPEG/PNG to size x size grayscale; throws ImageDecodeError with a user-facing reason. */
export async function decodeBuffer(buf: Uint8Array, size: number, fit: ResizeFit): Promise<Uint8Array> {
  if (buf.length === 0) throw new ImageDecodeError('empty file (0 bytes)');
  const header = sniffImageHeader(buf);
  if (!header) throw new ImageDecodeError(`not a JPEG or PNG image (content starts with ${describeContent(buf)})`);
  if (header.width === 0 || header.height === 0) throw new ImageDecodeError(`corrupt image header (${header.width}x${header.height} pixels)`);
  if (header.width * header.height > MAX_INPUT_PIXELS) {
    throw new ImageDecodeError(
      `image is ${header.width}x${header.height} pixels, over the ${MAX_INPUT_SIDE}x${MAX_INPUT_SIDE} limit`,
    );
  }
  let pipeline = sharp(buf, { failOn: 'error', limitInputPixels: MAX_INPUT_PIXELS, sequentialRead: true });
  const limit = PRESHRINK_FACTOR * size;
  if (header.width > limit || header.height > limit) {
    // Large input: let libvips shrink (JPEG shrink-on-load) to about twice the output size; the final
    // antialiased resize below then behaves the same as for small inputs.
    const fx = Math.min(1, limit / header.width);
    const fy = Math.min(1, limit / header.height);
    const f = fit === 'fill' ? null : fit === 'cover' ? Math.max(fx, fy) : Math.min(fx, fy);
    const width = Math.max(1, Math.round(header.width * (f ?? fx)));
    const height = Math.max(1, Math.round(header.height * (f ?? fy)));
    pipeline = pipeline.resize(width, height, { fit: 'fill', kernel: 'linear' });
  }
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    decoded = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new ImageDecodeError(sharpReason(err, buf, header));
  }
  const { data, info } = decoded;
  const pixels = info.width * info.height;
  if (data.length !== pixels * info.channels) {
    throw new ImageDecodeError(`unexpected decoder output (${data.length} bytes for ${info.width}x${info.height}x${info.channels})`);
  }
  const gray = toLuma(data, pixels, info.channels);
  return resizeGray(gray, info.width, info.height, size, fit);
}

/** Decodes one image file (for prediction); throws an Error naming the file and what is wrong with it. */
export async function decodeFile(
  file: string,
  opts: { size?: number; fit?: ResizeFit; native?: boolean } = {},
): Promise<Uint8Array> {
  const size = opts.size ?? 150;
  const fit = opts.fit ?? 'fill';
  // Same path as decodeImages, so a predicted image gets exactly the pixels training would have given it.
  const addon = opts.native === false ? null : nativeJpeg();
  if (addon) {
    const { pixels, ok } = await addon.decodeBatch([path.resolve(file)], size, FIT_CODES[fit]);
    if (ok[0]) return new Uint8Array(pixels.buffer, pixels.byteOffset, size * size);
  }
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch (err) {
    throw new ImageDecodeError(`Cannot read image ${file}: ${(err as Error).message}`);
  }
  try {
    return await decodeBuffer(buf, size, fit);
  } catch (err) {
    throw new ImageDecodeError(`Cannot decode image ${file}: ${(err as Error).message}. Pass a JPEG or PNG chest X-ray.`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Many images, with a cache.

/** Result of decoding a list of records: which indices survived, their pixels, and why the rest did not. */
interface DecodeResult {
  kept: Int32Array;
  pixels: Uint8Array;
  skipped: { index: number; reason: string }[];
}

interface FileStamp {
  size: number;
  mtimeMs: number;
}

async function stampFiles(records: ImageRecord[]): Promise<(FileStamp | null)[]> {
  const stamps: (FileStamp | null)[] = new Array(records.length).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const i = next++;
      try {
        const st = await fsp.stat(records[i].path);
        stamps[i] = { size: st.size, mtimeMs: st.mtimeMs };
      } catch {
        stamps[i] = null;
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return stamps;
}

function cacheKey(records: ImageRecord[], stamps: (FileStamp | null)[], size: number, fit: ResizeFit, backend: string): string {
  const hash = crypto.createHash('sha256');
  // The backend is part of the key: the native and sharp paths may differ by one grey level.
  hash.update(`${CACHE_VERSION}\0${size}\0${fit}\0${backend}\0`);
  records.forEach((r, i) => {
    const s = stamps[i];
    hash.update(`${r.path}\0${r.label}\0${s ? `${s.size}\0${s.mtimeMs}` : 'missing'}\n`);
  });
  return hash.digest('hex').slice(0, 24);
}

/** Cache file layout: magic, uint32 header length, JSON header, then the pixels of the kept images. */
async function readCache(file: string, count: number, size: number): Promise<DecodeResult | null> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(file);
  } catch {
    return null;
  }
  try {
    if (buf.toString('latin1', 0, CACHE_MAGIC.length) !== CACHE_MAGIC) return null;
    const headerLen = buf.readUInt32LE(CACHE_MAGIC.length);
    const start = CACHE_MAGIC.length + 4;
    const header = JSON.parse(buf.toString('utf8', start, start + headerLen)) as {
      count: number;
      size: number;
      kept: number[];
      skipped: { index: number; reason: string }[];
    };
    const pixelStart = start + headerLen;
    const expected = header.kept.length * size * size;
    if (header.count !== count || header.size !== size || buf.length - pixelStart !== expected) return null;
    return {
      kept: Int32Array.from(header.kept),
      pixels: new Uint8Array(buf.buffer, buf.byteOffset + pixelStart, expected),
      skipped: header.skipped,
    };
  } catch {
    return null;
  }
}

async function writeCache(file: string, result: DecodeResult, count: number, size: number): Promise<void> {
  const header = Buffer.from(
    JSON.stringify({ count, size, kept: Array.from(result.kept), skipped: result.skipped }),
    'utf8',
  );
  const prefix = Buffer.alloc(CACHE_MAGIC.length + 4);
  prefix.write(CACHE_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(header.length, CACHE_MAGIC.length);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  // Two runs may decode the same images at once (a sweep next to a notebook): each writes its own temp file
  // (pid + random, as two writes in one process can share a millisecond) and renames it into place, so a reader
  // sees a whole cache file or none, never a mix.
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
  const handle = await fsp.open(tmp, 'wx');
  try {
    await handle.writev([prefix, header, result.pixels]);
  } catch (err) {
    await handle.close();
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  await fsp.rename(tmp, file);
}

type ProgressFn = (done: number, total: number) => void;

function makeProgress(progress: DecodeOptions['progress'], total: number): { tick: ProgressFn; stop: () => void } {
  if (typeof progress === 'function') return { tick: progress, stop: () => undefined };
  if (progress === true && process.stderr.isTTY && total > 0) {
    const bar = new SingleBar(
      { stream: process.stderr, format: 'decoding {bar} {value}/{total} images | {eta_formatted} left', hideCursor: true },
      Presets.shades_classic,
    );
    bar.start(total, 0);
    return { tick: (done) => bar.update(done), stop: () => bar.stop() };
  }
  return { tick: () => undefined, stop: () => undefined };
}

function defaultConcurrency(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(4, pool * 4);
}

/** Runs the native JPEG fast path over the records in batches; returns which indices it could not handle. */
async function decodeNativeBatches(
  addon: NativeJpeg,
  records: ImageRecord[],
  size: number,
  fit: ResizeFit,
  results: (Uint8Array | null)[],
  onDone: (n: number) => void,
): Promise<number[]> {
  const perImage = size * size;
  const fallback: number[] = [];
  const batches: number[][] = [];
  for (let i = 0; i < records.length; i += NATIVE_BATCH) {
    batches.push(Array.from({ length: Math.min(NATIVE_BATCH, records.length - i) }, (_, k) => i + k));
  }
  let next = 0;
  const worker = async () => {
    while (next < batches.length) {
      const batch = batches[next++];
      const { pixels, ok } = await addon.decodeBatch(
        batch.map((i) => records[i].path),
        size,
        FIT_CODES[fit],
      );
      let handled = 0;
      batch.forEach((index, k) => {
        if (ok[k]) {
          results[index] = pixels.subarray(k * perImage, (k + 1) * perImage);
          handled++;
        } else fallback.push(index);
      });
      onDone(handled);
    }
  };
  // One batch per libuv pool thread keeps every core decoding.
  const poolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  await Promise.all(Array.from({ length: Math.min(poolSize, batches.length) }, worker));
  return fallback.sort((a, b) => a - b);
}

async function decodeUncached(records: ImageRecord[], size: number, fit: ResizeFit, opts: DecodeOptions): Promise<DecodeResult> {
  const total = records.length;
  const perImage = size * size;
  const results: (Uint8Array | null)[] = new Array(total).fill(null);
  const reasons: (string | null)[] = new Array(total).fill(null);
  const progress = makeProgress(opts.progress, total);
  let done = 0;
  let lastTick = 0;
  const advance = (n: number) => {
    done += n;
    if (done - lastTick >= 64 || done === total) {
      lastTick = done;
      progress.tick(done, total);
    }
  };
  try {
    const addon = opts.native === false ? null : nativeJpeg();
    const general = addon
      ? await decodeNativeBatches(addon, records, size, fit, results, advance)
      : records.map((_, i) => i);
    let next = 0;
    const worker = async () => {
      while (next < general.length) {
        const i = general[next++];
        try {
          const buf = await fsp.readFile(records[i].path);
          results[i] = await decodeBuffer(buf, size, fit);
        } catch (err) {
          const msg = (err as Error).message;
          reasons[i] = err instanceof ImageDecodeError ? msg : `cannot read file (${msg})`;
        }
        advance(1);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? defaultConcurrency()) }, worker));
  } finally {
    progress.stop();
  }
  const kept: number[] = [];
  const skipped: { index: number; reason: string }[] = [];
  for (let i = 0; i < total; i++) {
    if (results[i]) kept.push(i);
    else skipped.push({ index: i, reason: reasons[i] ?? 'unknown decode failure' });
  }
  const pixels = new Uint8Array(kept.length * perImage);
  kept.forEach((i, k) => pixels.set(results[i]!, k * perImage));
  return { kept: Int32Array.from(kept), pixels, skipped };
}

function reportSkips(records: ImageRecord[], result: DecodeResult): void {
  if (result.skipped.length === 0) return;
  const shown = result.skipped
    .slice(0, 3)
    .map((s) => `${records[s.index].path} (${s.reason})`)
    .join('; ');
  const more = result.skipped.length > 3 ? `; and ${result.skipped.length - 3} more` : '';
  process.stderr.write(
    `decode: skipped ${result.skipped.length} of ${records.length} images that could not be decoded: ${shown}${more}\n`,
  );
}

/** Most recent cache files kept per folder; older ones are deleted (each is ~22 KB per image at 150 px). */
const CACHE_KEEP = 6;

async function pruneCache(cacheDir: string, keep: string): Promise<void> {
  try {
    const names = (await fsp.readdir(cacheDir)).filter((n) => n.startsWith('decoded-') && n.endsWith('.bin'));
    const stats = await Promise.all(
      names.map(async (n) => ({ file: path.join(cacheDir, n), mtime: (await fsp.stat(path.join(cacheDir, n))).mtimeMs })),
    );
    const old = stats.filter((s) => s.file !== keep).sort((a, b) => b.mtime - a.mtime).slice(CACHE_KEEP - 1);
    await Promise.all(old.map((s) => fsp.rm(s.file, { force: true })));
  } catch {
    // pruning is housekeeping: never fail a load over it
  }
}

/** Decodes (or loads from cache) records given in canonical order: unique paths, sorted. */
async function decodeCanonical(records: ImageRecord[], size: number, fit: ResizeFit, opts: DecodeOptions): Promise<DecodeResult> {
  const cacheDir = opts.cacheDir === undefined ? path.resolve('outputs/cache') : opts.cacheDir;
  if (cacheDir === null) return decodeUncached(records, size, fit, opts);
  const stamps = await stampFiles(records);
  const key = cacheKey(records, stamps, size, fit, decodeBackend(opts.native !== false));
  const cacheFile = path.join(cacheDir, `decoded-${size}-${fit}-${key}.bin`);
  const cached = await readCache(cacheFile, records.length, size);
  if (cached) {
    const now = new Date();
    await fsp.utimes(cacheFile, now, now).catch(() => undefined); // recently used: kept by pruning
    return cached;
  }
  const result = await decodeUncached(records, size, fit, opts);
  try {
    await writeCache(cacheFile, result, records.length, size);
    await pruneCache(cacheDir, cacheFile);
  } catch (err) {
    process.stderr.write(`decode: could not write cache ${cacheFile} (${(err as Error).message}); continuing without it\n`);
  }
  return result;
}

/**
 * Decodes (or loads from cache) all records; the shared core of decodeImages and decodeSplit. The cache holds
 * the set of files in path order, so re-splitting with another seed or reordering the records still hits it.
 */
async function decodeWithCache(records: ImageRecord[], opts: DecodeOptions): Promise<DecodeResult> {
  const size = opts.size ?? 150;
  const fit = opts.fit ?? 'fill';
  if (!Number.isInteger(size) || size < 1 || size > 4096) throw new RangeError(`size must be an integer in 1..4096, got ${size}`);
  if (!['fill', 'cover', 'contain'].includes(fit)) throw new RangeError(`fit must be fill, cover or contain, got ${fit}`);

  const canonicalIndex = new Map<string, number>();
  const canonical = records
    .filter((r) => !canonicalIndex.has(r.path) && canonicalIndex.set(r.path, -1))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  canonical.forEach((r, c) => canonicalIndex.set(r.path, c));
  const base = await decodeCanonical(canonical, size, fit, opts);

  // Back to the caller's order (and duplicates), as indices into `records`.
  const perImage = size * size;
  const position = new Int32Array(canonical.length).fill(-1);
  base.kept.forEach((c, k) => (position[c] = k));
  const reasonOf = new Map(base.skipped.map((s) => [s.index, s.reason] as const));
  const kept: number[] = [];
  const skipped: { index: number; reason: string }[] = [];
  records.forEach((r, i) => {
    const c = canonicalIndex.get(r.path)!;
    if (position[c] >= 0) kept.push(i);
    else skipped.push({ index: i, reason: reasonOf.get(c) ?? 'not decoded' });
  });
  const identity = kept.length === base.kept.length && kept.every((i, k) => canonicalIndex.get(records[i].path) === base.kept[k]);
  let pixels = base.pixels;
  if (!identity) {
    pixels = new Uint8Array(kept.length * perImage);
    kept.forEach((i, k) => {
      const from = position[canonicalIndex.get(records[i].path)!] * perImage;
      pixels.set(base.pixels.subarray(from, from + perImage), k * perImage);
    });
  }
  const result = { kept: Int32Array.from(kept), pixels, skipped };
  reportSkips(records, result);
  return result;
}

function toDecodedImages(records: ImageRecord[], size: number, result: DecodeResult, indices: number[]): DecodedImages {
  const perImage = size * size;
  const positionOf = new Map<number, number>();
  result.kept.forEach((idx, k) => positionOf.set(idx, k));
  const keptRecords: ImageRecord[] = [];
  const skipped: SkippedFile[] = [];
  const reasonOf = new Map(result.skipped.map((s) => [s.index, s.reason] as const));
  const positions: number[] = [];
  for (const i of indices) {
    const k = positionOf.get(i);
    if (k === undefined) skipped.push({ path: records[i].path, reason: reasonOf.get(i) ?? 'not decoded' });
    else {
      keptRecords.push(records[i]);
      positions.push(k);
    }
  }
  // A contiguous run (the common case: all records of one call) is a zero-copy view.
  const contiguous = positions.every((k, j) => k === positions[0] + j);
  const pixels = contiguous
    ? result.pixels.subarray(positions.length ? positions[0] * perImage : 0, positions.length ? (positions[0] + positions.length) * perImage : 0)
    : (() => {
        const out = new Uint8Array(positions.length * perImage);
        positions.forEach((k, j) => out.set(result.pixels.subarray(k * perImage, (k + 1) * perImage), j * perImage));
        return out;
      })();
  const labels = Uint8Array.from(keptRecords, (r) => (r.label === 'PNEUMONIA' ? 1 : 0));
  return { records: keptRecords, size, pixels, labels, skipped };
}

/** Grayscale size x size pixels of the records, in input order, minus skipped files (listed with reasons). */
export async function decodeImages(records: ImageRecord[], opts: DecodeOptions = {}): Promise<DecodedImages> {
  const size = opts.size ?? 150;
  const result = await decodeWithCache(records, opts);
  return toDecodedImages(records, size, result, records.map((_, i) => i));
}

/** Decodes the three parts of a split with one cached decode. */
export async function decodeSplit(split: Split, opts: DecodeOptions = {}): Promise<Record<SplitName, DecodedImages>> {
  const size = opts.size ?? 150;
  const names: SplitName[] = ['train', 'val', 'test'];
  const all = names.flatMap((n) => split[n]);
  const result = await decodeWithCache(all, opts);
  const parts = {} as Record<SplitName, DecodedImages>;
  let offset = 0;
  for (const name of names) {
    const indices = split[name].map((_, j) => offset + j);
    parts[name] = toDecodedImages(all, size, result, indices);
    offset += split[name].length;
  }
  return parts;
}
