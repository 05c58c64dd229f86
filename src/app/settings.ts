/** What the page knows about the run it was built from; written into index.html by the build, read by the bundle. */
import type { ResizeFit } from '../data/pixels';

export interface MetricsRow {
  accuracy: number;
  precision: number;
  recall: number;
  specificity: number;
  f1: number;
  auc: number;
  count: number;
}

export interface SplitCounts {
  NORMAL: number;
  PNEUMONIA: number;
}

export interface AppSettings {
  /** The run folder's name, e.g. 2026-12-01T21-56-43-seed-150. */
  run: string;
  threshold: number;
  /** How the threshold was chosen on validation, in words (e.g. "recall=0.98"). */
  thresholdRule: string;
  imageSize: number;
  fit: ResizeFit;
  /** Input channels of the model: grey is repeated for an RGB model, as predict does. */
  channels: number;
  /** 'float32', or the dtype the weights were quantized to. */
  weights: 'float32' | 'uint16' | 'uint8';
  val: MetricsRow;
  test: MetricsRow;
  train: SplitCounts;
  /** Trained on the project's synthetic demo set (npm run data:demo), not on X-rays. */
  synthetic: boolean;
  /** 'official' (the dataset's own test folder) or 'carved' (split off train by patient). */
  testSource: string;
  /** What quantizing the weights cost on the test split, when they were quantized. */
  quantization?: { images: number; floatAccuracy: number; quantizedAccuracy: number; decisionsChanged: number };
}

/** The element id of the JSON settings block in index.html. */
export const SETTINGS_ELEMENT_ID = 'pneumo-settings';

/** Global names the data scripts (model.js, wasm.js) assign, so the page needs no fetch (file:// forbids it). */
export const MODEL_GLOBAL = 'PNEUMO_MODEL';
export const WASM_GLOBAL = 'PNEUMO_WASM';

/** model.js's payload: tfjs model artifacts with the weights as base64. */
export interface EmbeddedModel {
  modelTopology: object;
  weightSpecs: unknown[];
  weightDataBase64: string;
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
}
