/**
 * The pure pixel functions of the decoder (no Node APIs), shared by decode.ts and the browser app
 * (src/app/browser.ts), so that the web page grayscales and resizes exactly as training did.
 */

export type ResizeFit = 'fill' | 'cover' | 'contain';

/** Largest accepted input, per side squared: beyond it an image is skipped rather than decoded. */
export const MAX_INPUT_SIDE = 20000;
export const MAX_INPUT_PIXELS = MAX_INPUT_SIDE * MAX_INPUT_SIDE;

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

/** Whether the file stops before its format's end marker (JPEG EOI, PNG IEND), i.e. it was cut short. */
export function looksTruncated(buf: Uint8Array, header: ImageHeader): boolean {
  const tail = buf.subarray(Math.max(0, buf.length - 64));
  const marker = header.format === 'png' ? [0x49, 0x45, 0x4e, 0x44] : [0xff, 0xd9]; // 'IEND' / EOI
  for (let i = tail.length - marker.length; i >= 0; i--) {
    if (marker.every((b, k) => tail[i + k] === b)) return false;
  }
  return true;
}

/** Format and dimensions from the first bytes, or null when the content is neither JPEG nor PNG. */
export function sniffImageHeader(buf: Uint8Array): ImageHeader | null {
  return pngHeader(buf) ?? jpegHeader(buf);
}

// ---------------------------------------------------------------------------------------------------------
// Luma and resize in JS.

/** ITU-R 601 luma with PIL's 16-bit fixed-point weights and rounding; alpha is ignored. */
export function toLuma(data: Uint8Array, pixels: number, channels: number): Uint8Array {
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
