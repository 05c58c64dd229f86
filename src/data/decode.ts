/**
 * Decodes image files to grayscale `size x size` Uint8 pixels, fast, with an on-disk cache.
 *
 * Two paths, measured on the 224x224 Kaggle JPEGs on 2 cores (see `npm run bench:data`):
 * - Native fast path (optional addon in accel/jpeg, built by `npm run build:jpeg`, loaded by src/accel/jpeg.ts):
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
import {
  MAX_INPUT_PIXELS,
  MAX_INPUT_SIDE,
  type ImageHeader,
  type ResizeFit,
  looksTruncated,
  resizeGray,
  sniffImageHeader,
  toLuma,
} from './pixels';
import { JpegFit, nativeJpeg, type NativeJpeg } from '../accel/jpeg';

export { nativeJpeg } from '../accel/jpeg';
export { MAX_INPUT_SIDE, resizeGray, sniffImageHeader, type ImageHeader, type ResizeFit } from './pixels';

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

/** Inputs larger than this many times the output side are pre-shrunk by libvips (JPEG shrink-on-load). */
const PRESHRINK_FACTOR = 2;
/** Bump when decoding semantics change, so stale caches are not reused. */
const CACHE_VERSION = 1;
const CACHE_MAGIC = 'PXCACHE1';

// Parallelism comes from many images in flight, each on one libvips thread; per-image threading only adds
// overhead on 224x224 inputs. libvips' operation cache is useless here (every file is read once).
sharp.cache(false);
sharp.concurrency(1);

const FIT_CODES: Record<ResizeFit, JpegFit> = { fill: JpegFit.Fill, cover: JpegFit.Cover, contain: JpegFit.Contain };
const NATIVE_BATCH = 32;

/** Which decoder handles JPEGs in this process (for benchmarks and reports). */
export function decodeBackend(native = true): string {
  const general = `sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}) + JS luma/resize`;
  const addon = native ? nativeJpeg() : null;
  return addon ? `native ${addon.libjpeg} for plain JPEGs, else ${general}` : general;
}

// ---------------------------------------------------------------------------------------------------------
// Bad images. Header sniffing, luma and resize live in ./pixels (pure, shared with the browser app).

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
// One image.

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

/** A split's parts decoded; `valTime` only when the split has an out-of-time validation part. */
export type DecodedParts = Record<SplitName, DecodedImages> & { valTime?: DecodedImages };

/** Decodes the parts of a split with one cached decode. */
export async function decodeSplit(split: Split, opts: DecodeOptions = {}): Promise<DecodedParts> {
  const size = opts.size ?? 150;
  const parts: Array<[keyof DecodedParts, ImageRecord[]]> = (['train', 'val', 'test'] as SplitName[]).map((n) => [n, split[n]]);
  if (split.valTime?.length) parts.push(['valTime', split.valTime]);
  const all = parts.flatMap(([, records]) => records);
  const result = await decodeWithCache(all, opts);
  const decoded = {} as DecodedParts;
  let offset = 0;
  for (const [name, records] of parts) {
    decoded[name] = toDecodedImages(all, size, result, records.map((_, j) => offset + j));
    offset += records.length;
  }
  return decoded;
}
