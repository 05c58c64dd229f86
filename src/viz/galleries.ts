/**
 * What the notebooks show as image grids and small tables, built here so each cell is one call: the per-folder class
 * counts, a seeded sample's statistics, gray levels and thumbnails (01), the augmentation before/after grid (02), the
 * forward-pass sample (03) and the hardest mistakes with Grad-CAM (05).
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { augmentBatch, parseAugment } from '../augment';
import { toTensor } from '../data/batches';
import type { EvalResult, PredictionRow } from '../evaluate';
import { SEED_ARTICLE_METRICS } from '../pipeline';
import { gradCam, gradCamOverlayPng } from '../evaluate/gradcam';
import { makeRng, shuffled } from '../random';
import { LABELS, type Dataset, type DecodedImages, type ImageRecord, type Label } from '../types';
import type { ImageItem } from './display';
import { binIntensities, type MetricSet } from './figures';
import { describeNumbers, filePixels, grayPng, imageFileStats, thumbnailPng, unitFloatPng } from './images';

/** The transforms 02 shows one at a time, then the run's own augmentation. */
export const GALLERY_TRANSFORMS: ReadonlyArray<[string, string]> = [
  ['original', 'none'],
  ['zoom ±30%', 'zoom=0.3'],
  ['vertical flip', 'vflip'],
  ['rotation ±15°', 'rotation=15'],
  ['shift ±10%', 'width-shift=0.1,height-shift=0.1'],
  ['brightness ±0.2', 'brightness=0.2'],
  ['contrast ±30%', 'contrast=0.3'],
];

/** The first `perClass` records of each class, NORMAL first. */
export function examplesPerClass(records: readonly ImageRecord[], perClass: number): ImageRecord[] {
  return LABELS.flatMap((label) => records.filter((r) => r.label === label).slice(0, perClass));
}

/**
 * Each decoded image before and after each transform (and `runAugment` last), row by row, seeded so a re-run
 * shows the same pictures. Tensors are disposed before returning.
 */
export async function augmentationGallery(
  decoded: DecodedImages,
  runAugment: string,
  seed: number,
): Promise<{ items: ImageItem[]; columns: number }> {
  const transforms = [...GALLERY_TRANSFORMS, [`this run (${runAugment})`, runAugment] as [string, string]];
  const size = decoded.size;
  const perImage = size * size;
  const xs = toTensor(decoded);
  const columns: Float32Array[][] = [];
  try {
    for (const [, spec] of transforms) {
      const out = augmentBatch(xs, parseAugment(spec), makeRng(seed));
      const values = out.dataSync() as Float32Array;
      columns.push(Array.from({ length: decoded.records.length }, (_, i) => values.slice(i * perImage, (i + 1) * perImage)));
      out.dispose();
    }
  } finally {
    xs.dispose();
  }
  const items: ImageItem[] = [];
  for (let i = 0; i < decoded.records.length; i++) {
    for (let t = 0; t < transforms.length; t++) {
      items.push({ png: await unitFloatPng(columns[t][i], size), caption: `${decoded.records[i].label} · ${transforms[t][0]}` });
    }
  }
  return { items, columns: transforms.length };
}

/** Images per source folder and class, with the total and the share of pneumonia. */
export function folderClassCounts(ds: Dataset): Array<Record<string, string | number>> {
  return ds.sources.map((source) => {
    const inFolder = ds.images.filter((i) => i.source === source);
    const row: Record<string, string | number> = { folder: source };
    for (const label of LABELS) row[label] = inFolder.filter((i) => i.label === label).length;
    row.total = inFolder.length;
    row['% PNEUMONIA'] = Number(((100 * (row.PNEUMONIA as number)) / Math.max(1, inFolder.length)).toFixed(1));
    return row;
  });
}

/** Up to `perClass` images of each class, drawn with `seed`: the films 01's statistics, histograms and thumbnails read. */
export function sampleByClass(ds: Dataset, perClass: number, seed: number): Record<Label, ImageRecord[]> {
  const rng = makeRng(seed);
  const sample = (label: Label) =>
    shuffled(
      ds.images.filter((i) => i.label === label),
      rng,
    ).slice(0, perClass);
  return { NORMAL: sample('NORMAL'), PNEUMONIA: sample('PNEUMONIA') };
}

const FILE_MEASURES = [
  ['width', (s: { width: number }) => s.width],
  ['height', (s: { height: number }) => s.height],
  ['mean gray', (s: { mean: number }) => s.mean],
  ['gray std', (s: { std: number }) => s.std],
] as const;

/** Each class's original width and height and the mean and spread of its gray levels: a row per class and measure. */
export async function imageStatsRows(samples: Record<Label, ImageRecord[]>): Promise<Array<Record<string, string | number>>> {
  const rows: Array<Record<string, string | number>> = [];
  for (const label of LABELS) {
    const stats = await Promise.all(samples[label].map((r) => imageFileStats(r.path)));
    for (const [measure, pick] of FILE_MEASURES) {
      const d = describeNumbers(stats.map(pick));
      rows.push({ class: label, measure, images: stats.length, min: d.min, median: d.median, mean: d.mean, max: d.max });
    }
  }
  return rows;
}

/** Each class's gray levels over its sample, read at side x side, in `bins` bins (intensityHistogramFigure's input). */
export async function classIntensityHistograms(
  samples: Record<Label, ImageRecord[]>,
  side = 64,
  bins = 32,
): Promise<Array<{ label: Label; counts: number[] }>> {
  const histograms = [];
  for (const label of LABELS) {
    const counts = new Array<number>(bins).fill(0);
    for (const r of samples[label]) binIntensities(await filePixels(r.path, side), bins).forEach((c, i) => (counts[i] += c));
    histograms.push({ label, counts });
  }
  return histograms;
}

/** The first `perClass` films of each class's sample as `size`-pixel thumbnails captioned with class and patient. */
export async function classThumbnails(samples: Record<Label, ImageRecord[]>, perClass = 4, size = 160): Promise<ImageItem[]> {
  const items: ImageItem[] = [];
  for (const label of LABELS) {
    for (const r of samples[label].slice(0, perClass))
      items.push({ png: await thumbnailPng(r.path, size), caption: `${label} · ${r.patient}` });
  }
  return items;
}

/** The model's P(PNEUMONIA) for the first `perClass` images of each class in a decoded batch. */
export function probabilityTable(batch: DecodedImages, probs: ArrayLike<number>, perClass = 4): Array<Record<string, string | number>> {
  return examplesPerClass(batch.records, perClass).map((r) => ({
    file: path.basename(r.path),
    label: r.label,
    'P(PNEUMONIA)': Number(probs[batch.records.indexOf(r)].toFixed(4)),
  }));
}

/** P(PNEUMONIA) for every image of a decoded batch, in one forward pass (tensors disposed). */
export function predictBatch(model: tf.LayersModel, batch: DecodedImages): Float32Array {
  return tf.tidy(() => (model.predict(toTensor(batch)) as tf.Tensor).dataSync() as Float32Array);
}

/** Each mistake as the image the model saw and its Grad-CAM overlay, captioned. */
export async function mistakeTiles(model: tf.LayersModel, test: DecodedImages, mistakes: readonly PredictionRow[]): Promise<ImageItem[]> {
  const size = test.size;
  const tiles: ImageItem[] = [];
  for (const m of mistakes) {
    const i = test.records.findIndex((r) => r.path === m.file);
    if (i < 0) throw new Error(`mistakeTiles: ${m.file} is not among the decoded test images.`);
    const pixels = test.pixels.subarray(i * size * size, (i + 1) * size * size);
    const cam = await gradCam(model, pixels, size);
    tiles.push({
      png: await grayPng(pixels, size),
      caption: `${m.label} called ${m.predicted}, P(pneumonia) ${m.probability.toFixed(3)} · ${path.basename(m.file)}`,
    });
    tiles.push({ png: await gradCamOverlayPng(pixels, cam.heatmap, size, { outSize: Math.max(size, 160) }), caption: 'Grad-CAM' });
  }
  return tiles;
}

/** The mistakes as a table: file, patient, actual and predicted class, P(pneumonia). */
export function mistakeTable(mistakes: readonly PredictionRow[]): Array<Record<string, string | number>> {
  return mistakes.map((m) => ({
    file: path.basename(m.file),
    patient: m.patient,
    actual: m.label,
    predicted: m.predicted,
    'P(pneumonia)': Number(m.probability.toFixed(4)),
  }));
}

const METRIC_NAMES = ['accuracy', 'precision', 'recall', 'specificity', 'f1'] as const;
const pct = (v: number) => (Number.isFinite(v) ? Number((100 * v).toFixed(1)) : null);

/** This run's test and validation metrics beside the seed article's, as a table (percent) and as figure sets. */
export function seedArticleComparison(ev: Pick<EvalResult, 'val' | 'test'>): {
  rows: Array<Record<string, string | number | null>>;
  sets: MetricSet[];
} {
  const rows = [
    ...METRIC_NAMES.map((m) => ({
      metric: m,
      'this run, test %': pct(ev.test[m]),
      'this run, val %': pct(ev.val[m]),
      'seed article %': SEED_ARTICLE_METRICS[m] as number | null,
    })),
    { metric: 'AUC', 'this run, test %': pct(ev.test.auc), 'this run, val %': pct(ev.val.auc), 'seed article %': null },
  ];
  const article = Object.fromEntries(
    METRIC_NAMES.map((m) => [m, SEED_ARTICLE_METRICS[m] === null ? null : (SEED_ARTICLE_METRICS[m] as number) / 100]),
  );
  const sets: MetricSet[] = [
    { name: 'this run (test)', values: { ...Object.fromEntries(METRIC_NAMES.map((m) => [m, ev.test[m]])), auc: ev.test.auc } },
    { name: 'seed article', values: article },
  ];
  return { rows, sets };
}
