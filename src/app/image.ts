/**
 * What the web page does to a dropped file before the model sees it, with no DOM and no Node APIs, so it is
 * tested in Node and bundled for the browser. The decoding itself is the browser's (createImageBitmap); the
 * checks, grayscale and resize are decode.ts's own functions (src/data/pixels.ts), so the page gives the model
 * the pixels `npm run predict` gives it.
 */
import {
  MAX_INPUT_PIXELS,
  MAX_INPUT_SIDE,
  type ImageHeader,
  type ResizeFit,
  looksTruncated,
  resizeGray,
  sniffImageHeader,
  toLuma,
} from '../data/pixels';

/**
 * The page decodes to RGBA in memory (4 bytes a pixel, plus a grey copy): beyond this a tab could run out of
 * memory or stall, so larger images get a message instead. 40 megapixels is above any chest detector's output
 * (about 4300 x 4300 at most).
 */
export const PAGE_MAX_PIXELS = 40_000_000;
/** Files above this size are refused before they are read into memory. */
export const PAGE_MAX_BYTES = 200 * 1024 * 1024;

export type ImageCheck = { ok: true; header: ImageHeader } | { ok: false; message: string };

/** The first bytes of a file, as decode.ts describes them in its skip reasons. */
export function describeContent(buf: Uint8Array): string {
  const head = buf.subarray(0, 32);
  const text = String.fromCharCode(...head);
  const printable = /^[\x20-\x7e\r\n\t]*$/.test(text);
  if (printable) return `text "${text.replace(/\s+/g, ' ').trim()}..."`;
  return `bytes ${Array.from(head.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function megapixels(n: number): string {
  return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)} megapixels`;
}

/**
 * Whether the page can decode this file, from its bytes alone: no pixel memory is allocated before this says
 * yes. The messages are decode.ts's reasons where the rule is the same, plus the page's own size limit.
 */
export function checkImageBytes(buf: Uint8Array, maxPixels = PAGE_MAX_PIXELS): ImageCheck {
  if (buf.length === 0) return { ok: false, message: 'empty file (0 bytes)' };
  const header = sniffImageHeader(buf);
  if (!header) return { ok: false, message: `not a JPEG or PNG image (content starts with ${describeContent(buf)})` };
  const { width, height } = header;
  if (width === 0 || height === 0) return { ok: false, message: `corrupt image header (${width}x${height} pixels)` };
  if (width * height > MAX_INPUT_PIXELS) {
    return { ok: false, message: `image is ${width}x${height} pixels, over the ${MAX_INPUT_SIDE}x${MAX_INPUT_SIDE} limit` };
  }
  if (width * height > maxPixels) {
    return {
      ok: false,
      message:
        `image is ${width}x${height} pixels (${megapixels(width * height)}); this page decodes at most ` +
        `${megapixels(maxPixels)} in browser memory. Shrink it, or use 'npm run predict' (up to ${MAX_INPUT_SIDE}x${MAX_INPUT_SIDE}).`,
    };
  }
  if (header.format === 'jpeg' && header.channels === 4) {
    // Measured on one film: 0.06 in the page against 0.25 from npm run predict (libvips converts CMYK with its profile).
    return {
      ok: false,
      message:
        "CMYK JPEG: browsers convert its colours differently from the training decoder; save it as RGB or greyscale, or use 'npm run predict'",
    };
  }
  if (looksTruncated(buf, header)) {
    return { ok: false, message: `truncated image (the file ends before the ${header.format.toUpperCase()} end marker)` };
  }
  return { ok: true, header };
}

/** RGBA pixels as the browser decodes them to the model's size x size grey input (alpha ignored, like PIL's 'L'). */
export function rgbaToModelInput(
  rgba: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
  size: number,
  fit: ResizeFit,
): Uint8Array {
  if (rgba.length !== width * height * 4) {
    throw new Error(`expected ${width}x${height} RGBA pixels (${width * height * 4} bytes), got ${rgba.length}`);
  }
  const bytes = rgba instanceof Uint8Array ? rgba : new Uint8Array(rgba.buffer, rgba.byteOffset, rgba.length);
  return resizeGray(toLuma(bytes, width * height, 4), width, height, size, fit);
}
