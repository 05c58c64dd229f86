/**
 * Builds the web app of a run: a static folder that opens from disk (file://) or from any static server with no
 * network. It holds index.html, app.js (the bundled page script, src/app/browser.ts), model.js (the model with
 * its weights embedded, since file:// pages cannot fetch), wasm.js (the tfjs wasm binaries as data: URLs, for the
 * same reason) and model/ (the same model as standard tfjs model.json + weights.bin, for other tools).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
// Registers the input-normalization layer for loading the run's model.
import '../model/normalization';
import { decodeImages } from '../data/decode';
import type { ResizeFit } from '../data/pixels';
import { predictProbabilities } from '../evaluate';
import { RUN_FILES } from '../runs/layout';
import { fileLoadHandler, writeModelFiles } from '../runs/model-files';
import { readJson, writeDirAtomic, writeFileAtomic } from '../files';
import type { RunConfigFile } from '../pipeline';
import type { ImageRecord, Split } from '../types';
import { renderPage } from './page';
import { type QuantizeBits, quantizeWeights } from './quantize';
import { type AppSettings, type EmbeddedModel, type MetricsRow, MODEL_GLOBAL, WASM_GLOBAL } from './settings';

/** The app folder's name inside a run, when no --out is given. */
export const APP_DIR = 'app';

/** The web app's index.html of a run, when `npm run app` has built one there (for the report to link). */
export function appIndexFor(runDir: string): string | undefined {
  const index = path.join(runDir, APP_DIR, 'index.html');
  return fs.existsSync(index) ? index : undefined;
}

const WASM_BINARIES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm'];

interface MetricsFile {
  threshold: number;
  thresholdRule?: { kind: string; target?: number; value?: number };
  val: MetricsRow;
  test: MetricsRow;
}

function ruleText(rule: MetricsFile['thresholdRule']): string {
  if (!rule) return 'unknown';
  if (rule.kind === 'recall') return `recall=${rule.target}`;
  if (rule.kind === 'fixed') return `fixed=${rule.value}`;
  return rule.kind;
}

function pickMetrics(m: MetricsRow): MetricsRow {
  const { accuracy, precision, recall, specificity, f1, auc, count } = m;
  return { accuracy, precision, recall, specificity, f1, auc, count };
}

/** Throws a message saying which run file is missing, so a wrong --run gets an answer rather than a stack. */
export function checkRunDir(runDir: string): void {
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) throw new Error(`${runDir} is not a folder.`);
  for (const file of [RUN_FILES.config, RUN_FILES.metrics, RUN_FILES.split, path.join(RUN_FILES.model, 'model.json')]) {
    if (!fs.existsSync(path.join(runDir, file))) {
      throw new Error(`${runDir} has no ${file}; pass a finished run folder (written by 'npm start').`);
    }
  }
}

/** What the page shows and needs, from the run's config.json, metrics.json and split.json. */
export function appSettingsFor(runDir: string, model: tf.LayersModel, weights: AppSettings['weights']): AppSettings {
  const config = readJson<RunConfigFile>(path.join(runDir, RUN_FILES.config)).config;
  const metrics = readJson<MetricsFile>(path.join(runDir, RUN_FILES.metrics));
  const split = readJson<Split>(path.join(runDir, RUN_FILES.split));
  if (typeof metrics.threshold !== 'number' || !Number.isFinite(metrics.threshold)) {
    throw new Error(`${path.join(runDir, RUN_FILES.metrics)} has no numeric threshold; re-run the evaluation.`);
  }
  const [, height, width, channels] = model.inputs[0].shape as number[];
  if (height !== width || height !== config.imageSize) {
    throw new Error(`the model takes ${height}x${width} images but config.json says imageSize ${config.imageSize}`);
  }
  const count = (label: string) => split.train.filter((r) => r.label === label).length;
  return {
    run: path.basename(path.resolve(runDir)),
    threshold: metrics.threshold,
    thresholdRule: ruleText(metrics.thresholdRule),
    imageSize: config.imageSize,
    fit: (config.fit ?? 'fill') as ResizeFit,
    channels,
    weights,
    val: pickMetrics(metrics.val),
    test: pickMetrics(metrics.test),
    train: { NORMAL: count('NORMAL'), PNEUMONIA: count('PNEUMONIA') },
    // The demo generator names its made-up patients synthetic-pNNNN (src/data/demo.ts).
    synthetic: split.train.length > 0 && split.train.every((r) => r.patient.startsWith('synthetic-')),
    testSource: split.testSource,
  };
}

/** The browser entry, found from here whether this file runs from src/ (tests) or dist/ (the command). */
function browserEntry(): string {
  const entry = path.resolve(__dirname, '..', '..', 'src', 'app', 'browser.ts');
  if (!fs.existsSync(entry)) throw new Error(`cannot find the page script ${entry}; run from a checkout of the project`);
  return entry;
}

/** Bundles the page script with esbuild; sharp (used only by gradcam.ts's PNG writer) becomes a stub that throws. */
export async function bundleBrowserScript(): Promise<string> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: [browserEntry()],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
    define: { 'process.env.NODE_ENV': '"production"' },
    plugins: [
      {
        name: 'node-only-stub',
        setup(build) {
          build.onResolve({ filter: /^sharp$/ }, () => ({ path: 'sharp', namespace: 'node-only' }));
          build.onLoad({ filter: /.*/, namespace: 'node-only' }, () => ({
            contents: "export default function sharp() { throw new Error('sharp is not available in the browser'); }",
            loader: 'js',
          }));
        },
      },
    ],
  });
  return result.outputFiles[0].text;
}

function wasmDataUrls(): Record<string, string> {
  const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  const urls: Record<string, string> = {};
  for (const name of WASM_BINARIES) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing; reinstall @tensorflow/tfjs-backend-wasm`);
    // Emscripten recognises exactly this prefix as an embedded binary.
    urls[name] = `data:application/octet-stream;base64,${fs.readFileSync(file).toString('base64')}`;
  }
  return urls;
}

function globalScript(name: string, value: unknown): string {
  return `window[${JSON.stringify(name)}] = ${JSON.stringify(value)};\n`;
}

/** The run's model artifacts, with weights quantized when asked. */
async function appArtifacts(modelDir: string, quantize?: QuantizeBits): Promise<tf.io.ModelArtifacts> {
  const artifacts = await fileLoadHandler(modelDir).load!();
  if (!quantize) return artifacts;
  const data = tf.io.CompositeArrayBuffer.join(artifacts.weightData);
  const quantized = quantizeWeights(artifacts.weightSpecs ?? [], data, quantize);
  return { ...artifacts, weightSpecs: quantized.specs, weightData: quantized.data };
}

function embeddedModel(artifacts: tf.io.ModelArtifacts): EmbeddedModel {
  return {
    modelTopology: artifacts.modelTopology as object,
    weightSpecs: artifacts.weightSpecs ?? [],
    weightDataBase64: Buffer.from(tf.io.CompositeArrayBuffer.join(artifacts.weightData)).toString('base64'),
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy ?? null,
  };
}

export interface QuantizationCost {
  bits: QuantizeBits;
  /** Test images decoded and compared (split.json's test list, minus files that no longer decode). */
  images: number;
  floatAccuracy: number;
  quantizedAccuracy: number;
  /** Decisions at the run's threshold that the quantized model makes differently. */
  decisionsChanged: number;
  maxProbabilityDifference: number;
  /** metrics.json's test accuracy, which floatAccuracy should reproduce. */
  recordedAccuracy: number;
}

function accuracyAt(labels: Uint8Array, probs: Float32Array, threshold: number): number {
  let right = 0;
  for (let i = 0; i < labels.length; i++) if ((probs[i] >= threshold ? 1 : 0) === labels[i]) right++;
  return right / labels.length;
}

/** Float vs quantized model on the run's test split, decoded as training decoded it. */
export async function measureQuantization(
  runDir: string,
  floatModel: tf.LayersModel,
  quantizedModel: tf.LayersModel,
  settings: AppSettings,
  bits: QuantizeBits,
): Promise<QuantizationCost> {
  const split = readJson<{ test: ImageRecord[] }>(path.join(runDir, RUN_FILES.split));
  const images = await decodeImages(split.test, { size: settings.imageSize, fit: settings.fit });
  if (images.records.length === 0) {
    throw new Error(`none of the ${split.test.length} test images in split.json could be decoded; is the data still there?`);
  }
  const floatProbs = await predictProbabilities(floatModel, images);
  const quantProbs = await predictProbabilities(quantizedModel, images);
  let changed = 0;
  let maxDiff = 0;
  for (let i = 0; i < floatProbs.length; i++) {
    if (floatProbs[i] >= settings.threshold !== quantProbs[i] >= settings.threshold) changed++;
    maxDiff = Math.max(maxDiff, Math.abs(floatProbs[i] - quantProbs[i]));
  }
  return {
    bits,
    images: images.records.length,
    floatAccuracy: accuracyAt(images.labels, floatProbs, settings.threshold),
    quantizedAccuracy: accuracyAt(images.labels, quantProbs, settings.threshold),
    decisionsChanged: changed,
    maxProbabilityDifference: maxDiff,
    recordedAccuracy: settings.test.accuracy,
  };
}

export interface BuildAppOptions {
  runDir: string;
  /** Default: the run's app/ folder. */
  outDir?: string;
  quantize?: QuantizeBits;
}

export interface BuildAppResult {
  outDir: string;
  index: string;
  files: { name: string; bytes: number }[];
  totalBytes: number;
  settings: AppSettings;
  quantization?: QuantizationCost;
}

function pickFields<T extends object, K extends keyof T>(value: T, keys: K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, value[k]])) as Pick<T, K>;
}

function listFiles(dir: string, prefix = ''): { name: string; bytes: number }[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) return listFiles(path.join(dir, e.name), rel);
    return [{ name: rel, bytes: fs.statSync(path.join(dir, e.name)).size }];
  });
}

export async function buildApp(opts: BuildAppOptions): Promise<BuildAppResult> {
  const runDir = path.resolve(opts.runDir);
  checkRunDir(runDir);
  const outDir = path.resolve(opts.outDir ?? path.join(runDir, APP_DIR));
  const modelDir = path.join(runDir, RUN_FILES.model);
  const artifacts = await appArtifacts(modelDir, opts.quantize);
  const floatModel = await tf.loadLayersModel(fileLoadHandler(modelDir));
  const appModel = opts.quantize ? await tf.loadLayersModel(tf.io.fromMemory(artifacts)) : floatModel;
  try {
    const weights = opts.quantize === 8 ? 'uint8' : opts.quantize === 16 ? 'uint16' : 'float32';
    const base = appSettingsFor(runDir, floatModel, weights);
    const quantization = opts.quantize ? await measureQuantization(runDir, floatModel, appModel, base, opts.quantize) : undefined;
    const settings: AppSettings = quantization
      ? { ...base, quantization: pickFields(quantization, ['images', 'floatAccuracy', 'quantizedAccuracy', 'decisionsChanged']) }
      : base;
    const script = await bundleBrowserScript();
    await writeDirAtomic(outDir, (tmp) => {
      fs.writeFileSync(path.join(tmp, 'index.html'), renderPage(settings));
      fs.writeFileSync(path.join(tmp, 'app.js'), script);
      fs.writeFileSync(path.join(tmp, 'model.js'), globalScript(MODEL_GLOBAL, embeddedModel(artifacts)));
      fs.writeFileSync(path.join(tmp, 'wasm.js'), globalScript(WASM_GLOBAL, wasmDataUrls()));
      fs.mkdirSync(path.join(tmp, 'model'));
      writeModelFiles(path.join(tmp, 'model'), artifacts);
      writeFileAtomic(path.join(tmp, 'settings.json'), JSON.stringify({ ...settings, quantizationCost: quantization }, null, 2) + '\n');
    });
    const files = listFiles(outDir);
    return {
      outDir,
      index: path.join(outDir, 'index.html'),
      files,
      totalBytes: files.reduce((n, f) => n + f.bytes, 0),
      settings,
      quantization,
    };
  } finally {
    floatModel.dispose();
    if (appModel !== floatModel) appModel.dispose();
  }
}
