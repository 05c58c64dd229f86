/**
 * Image helpers for the notebooks: thumbnails and statistics straight from the files (for exploring the data as it
 * is on disk), and PNG encoding of decoded grayscale pixels (for showing what the model actually sees).
 */
import sharp from 'sharp';

/** Grayscale `size x size` 0..255 pixels -> PNG. */
export async function grayPng(pixels: Uint8Array, size: number): Promise<Buffer> {
  if (pixels.length !== size * size) throw new Error(`grayPng: expected ${size * size} pixels for ${size}x${size}, got ${pixels.length}`);
  return sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.length), { raw: { width: size, height: size, channels: 1 } })
    .png()
    .toBuffer();
}

/** Float pixels in [0, 1] (e.g. a model input tensor's data) -> PNG. */
export async function unitFloatPng(values: Float32Array | number[], size: number): Promise<Buffer> {
  const pixels = new Uint8Array(size * size);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.max(0, Math.min(255, Math.round(values[i] * 255)));
  return grayPng(pixels, size);
}

/** A grayscale square thumbnail of an image file, as PNG. */
export async function thumbnailPng(file: string, size = 160): Promise<Buffer> {
  try {
    return await sharp(file).grayscale().resize(size, size, { fit: 'fill' }).png().toBuffer();
  } catch (err) {
    throw new Error(`Cannot read image ${file}: ${(err as Error).message}`);
  }
}

export interface ImageFileStats {
  file: string;
  width: number;
  height: number;
  channels: number;
  /** Mean and standard deviation of the grayscale intensity, 0..255. */
  mean: number;
  std: number;
}

/** Size, channel count and grayscale intensity statistics of one image file. */
export async function imageFileStats(file: string): Promise<ImageFileStats> {
  try {
    const meta = await sharp(file).metadata();
    const stats = await sharp(file).grayscale().stats();
    const ch = stats.channels[0];
    return { file, width: meta.width ?? 0, height: meta.height ?? 0, channels: meta.channels ?? 0, mean: ch.mean, std: ch.stdev };
  } catch (err) {
    throw new Error(`Cannot read image ${file}: ${(err as Error).message}`);
  }
}

/** Grayscale pixels of an image file resized to `size x size` (for intensity histograms). */
export async function filePixels(file: string, size: number): Promise<Uint8Array> {
  const { data } = await sharp(file).grayscale().resize(size, size, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** Summary (min / median / max / mean) of a list of numbers, for the stats tables. */
export function describeNumbers(values: number[]): { min: number; median: number; max: number; mean: number } {
  if (values.length === 0) return { min: NaN, median: NaN, max: NaN, mean: NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { min: sorted[0], median, max: sorted[sorted.length - 1], mean: values.reduce((a, b) => a + b, 0) / values.length };
}
