/**
 * The optional libjpeg-turbo decoder (C++ in accel/jpeg, `npm run build:jpeg`): batch-decodes plain 8-bit JPEGs
 * straight to luma and resizes them in C on the libuv pool. src/data/decode.ts uses it when it is built; without it
 * everything goes through sharp, slower but the same pixels to within one grey level. Loads no tfjs.
 */
import { addonFile } from './addons';

/** decodeBatch's fit codes: mirrors enum Fit in accel/jpeg/jpeg_gray.cc (tests/accel-op-codes.test.ts checks). */
export const JpegFit = { Fill: 0, Cover: 1, Contain: 2 } as const;
export type JpegFit = (typeof JpegFit)[keyof typeof JpegFit];

/** The addon's functions (accel/jpeg/jpeg_gray.cc). */
export interface NativeJpeg {
  /** pixels: size*size bytes per path; ok[i] = 0 where path i is left to the general path (not a plain JPEG, bad). */
  decodeBatch(paths: string[], size: number, fit: JpegFit): Promise<{ pixels: Buffer; ok: Buffer }>;
  libjpeg: string;
}

let nativeAddon: NativeJpeg | null | undefined;

/** The addon, loaded once, or null when it is not built (or not loadable here) or PNEUMO_NATIVE_JPEG=0 turns it off. */
export function nativeJpeg(): NativeJpeg | null {
  if (nativeAddon !== undefined) return nativeAddon;
  nativeAddon = null;
  if (process.env.PNEUMO_NATIVE_JPEG === '0') return null;
  const file = addonFile('jpeg', 'jpeg_gray.node');
  if (!file) return null;
  try {
    nativeAddon = require(file) as NativeJpeg;
  } catch {
    // not built here, or built for another platform: fall back to sharp
  }
  return nativeAddon;
}
