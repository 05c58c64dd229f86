/**
 * Exposure stress: the validation films re-rendered as another device or year might have exposed them, scored at the
 * run's own threshold. The out-of-time split drawn from train/ barely differs from training (its AUC is as high as
 * the random split's), while the official test's early normal films are about 10 gray levels brighter; these fixed
 * shifts ask directly whether specificity survives such a change.
 */
import type { DecodedImages } from '../types';

export interface ExposureShift {
  name: string;
  /** Added to every pixel, in gray levels of 255. */
  offset?: number;
  /** Pixels become 255 * (x / 255)^gamma. */
  gamma?: number;
  /** Deviation from mid-gray (128) is multiplied by this. */
  contrast?: number;
}

/** The shifts `npm run evaluate -- --stress` reports, each about the size of the measured train/test difference. */
export const EXPOSURE_SHIFTS: readonly ExposureShift[] = [
  { name: 'brighter +10', offset: 10 },
  { name: 'darker -10', offset: -10 },
  { name: 'gamma 0.8', gamma: 0.8 },
  { name: 'gamma 1.25', gamma: 1.25 },
  { name: 'contrast 0.85', contrast: 0.85 },
];

/** The 256-entry lookup table of a shift (gamma, then contrast, then offset), clipped to 0..255. */
export function exposureTable(shift: ExposureShift): Uint8Array {
  const table = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    let x = 255 * Math.pow(v / 255, shift.gamma ?? 1);
    x = 128 + (x - 128) * (shift.contrast ?? 1);
    x += shift.offset ?? 0;
    table[v] = Math.max(0, Math.min(255, Math.round(x)));
  }
  return table;
}

/** A copy of the images with the shift applied to every pixel; records and labels are shared. */
export function shiftExposure(images: DecodedImages, shift: ExposureShift): DecodedImages {
  const table = exposureTable(shift);
  const pixels = new Uint8Array(images.pixels.length);
  for (let i = 0; i < pixels.length; i++) pixels[i] = table[images.pixels[i]];
  return { ...images, pixels };
}
