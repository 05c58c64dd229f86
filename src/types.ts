/** Domain types shared across modules. Module-specific types live in their own module. */

/** Class names as they appear in the Kaggle folders; index 1 (PNEUMONIA) is the positive class. */
export const LABELS = ['NORMAL', 'PNEUMONIA'] as const;
export type Label = (typeof LABELS)[number];

/** The folder an image came from in the Kaggle layout. */
export type SourceSplit = 'train' | 'val' | 'test';

/** One image file found on disk. */
export interface ImageRecord {
  /** Absolute path. */
  path: string;
  label: Label;
  /** Patient id parsed from the file name; all of a patient's images go to the same split. */
  patient: string;
  source: SourceSplit;
}

/** A file that was seen but not used, and why; reported to the user, never dropped silently. */
export interface SkippedFile {
  path: string;
  reason: string;
}

/** Everything discovered under a dataset root. */
export interface Dataset {
  root: string;
  images: ImageRecord[];
  skipped: SkippedFile[];
  /** Which of train/val/test folders exist. */
  sources: SourceSplit[];
}

export type SplitName = 'train' | 'val' | 'test';

/** Which file went where: the unit of honesty for evaluation. */
export interface Split {
  train: ImageRecord[];
  val: ImageRecord[];
  test: ImageRecord[];
  seed: number;
  /** 'official' when the dataset's own test/ folder is the test set, 'carved' when we split one off. */
  testSource: 'official' | 'carved';
  /**
   * Out-of-time validation: the earliest-numbered patients of train/ (src/data/acquisition.ts), which differ from
   * training the way the official test set does. Absent or empty when not carved.
   */
  valTime?: ImageRecord[];
  /** The dataset root the images came from (absent in split files written before it was recorded). */
  root?: string;
}

/** Decoded grayscale images, row-major `count x size x size`, 0..255. */
export interface DecodedImages {
  records: ImageRecord[];
  size: number;
  pixels: Uint8Array;
  /** 0 = NORMAL, 1 = PNEUMONIA, one per record. */
  labels: Uint8Array;
  /** Files that could not be decoded (and are therefore absent from `records`). */
  skipped: SkippedFile[];
}
