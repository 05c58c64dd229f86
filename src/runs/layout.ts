/**
 * The run layout: a run directory holds everything one training run produced: config, split, history, metrics,
 * predictions, the best model and a resumable checkpoint. This module owns the file names and the atomic writes;
 * read.ts reads runs back, lock.ts keeps one writer per run. Every file is written atomically (temp file + rename) so a crash
 * or Ctrl-C never leaves a half-written file that a later `--resume` or report would trip over.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';

/** A tensor with a name, as optimizers' getWeights/setWeights use. */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

export const DEFAULT_RUNS_DIR = path.join('outputs', 'runs');

/** A sweep folder's manifest; the sweep's runs are the folders beside it. */
export const SWEEP_FILE = 'sweep.json';

/** Files inside a run directory; one place so pipeline, CLI, report and notebooks agree on names. */
export const RUN_FILES = {
  config: 'config.json',
  split: 'split.json',
  historyJson: 'history.json',
  historyCsv: 'history.csv',
  metrics: 'metrics.json',
  predictions: 'predictions.csv',
  summary: 'summary.md',
  model: 'model',
  latest: path.join('checkpoints', 'latest'),
  /** Who is writing the run right now (see lock.ts). */
  lock: '.lock',
} as const;

function tempSibling(target: string): string {
  const rand = Math.random().toString(36).slice(2, 8);
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${rand}`);
}

/** `2026-11-26T01-02-03` — sortable, and safe in file names on every OS. */
export function timestampForPath(date = new Date()): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, '')
    .replace(/:/g, '-');
}

/** Turns a free-form run name into something safe for a folder name. */
export function sanitizeName(name: string): string {
  return name
    .trim()
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60);
}

/**
 * Creates `<out>/<timestamp>-<label>/` and returns its absolute path. `mkdir` without `recursive` fails when the
 * folder exists, so two processes starting in the same second get different folders and no run is ever reused.
 */
export function createRunDir(out: string = DEFAULT_RUNS_DIR, name = 'run', date = new Date()): string {
  fs.mkdirSync(out, { recursive: true });
  const base = `${timestampForPath(date)}-${sanitizeName(name) || 'run'}`;
  for (let n = 1; ; n++) {
    const dir = path.resolve(out, n === 1 ? base : `${base}-${n}`);
    try {
      fs.mkdirSync(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** True when `dir` looks like a run folder (it has config.json). */
export function isRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, RUN_FILES.config));
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempSibling(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T>(file: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`Cannot read ${file}: file is missing or unreadable.`);
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${file} is not valid JSON; delete it or re-run the step that writes it.`);
  }
}

function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  const s = typeof value === 'number' && !Number.isFinite(value) ? String(value) : String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** CSV with a header row taken from `columns` (or the union of the rows' keys, in first-seen order). */
export function toCsv(rows: ReadonlyArray<Record<string, unknown>>, columns?: string[]): string {
  const cols = columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const lines = [cols.map(csvCell).join(',')];
  for (const row of rows) lines.push(cols.map((c) => csvCell(row[c])).join(','));
  return lines.join('\n') + '\n';
}

export function writeCsvAtomic(file: string, rows: ReadonlyArray<Record<string, unknown>>, columns?: string[]): void {
  writeFileAtomic(file, toCsv(rows, columns));
}

/**
 * Replaces `dir` with a fully written directory: `fill` writes into a temp sibling, which is then renamed into
 * place. A reader sees either the old complete directory or the new complete one.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void): Promise<void> {
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = tempSibling(dir);
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    if (fs.existsSync(dir)) {
      // rename() cannot replace a non-empty directory: move the old one aside first, then drop it.
      const old = tempSibling(dir);
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, dir);
    }
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

function joinWeightData(data: tf.io.WeightData | undefined): ArrayBuffer {
  if (data === undefined) return new ArrayBuffer(0);
  return tf.io.CompositeArrayBuffer.join(data);
}

/** Writes the standard tfjs `model.json` + `weights.bin` pair into an existing folder (not atomic by itself). */
export function writeModelFiles(dir: string, artifacts: tf.io.ModelArtifacts): number {
  const weights = joinWeightData(artifacts.weightData);
  const modelJson: tf.io.ModelJSON = {
    modelTopology: artifacts.modelTopology as object,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
  };
  if (artifacts.trainingConfig) modelJson.trainingConfig = artifacts.trainingConfig;
  if (artifacts.userDefinedMetadata) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
  fs.writeFileSync(path.join(dir, MODEL_JSON), JSON.stringify(modelJson));
  fs.writeFileSync(path.join(dir, WEIGHTS_BIN), Buffer.from(weights));
  return weights.byteLength;
}

/** The model's topology and weights in memory, as `model.save` would hand them to a handler. */
export async function modelArtifacts(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let captured: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      captured = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return captured!;
}

/**
 * A tfjs IOHandler that writes `model.json` + `weights.bin` with plain fs (tfjs-node's `file://` handler is
 * not available with the pure-JS/wasm backends), atomically. The files load in the browser too.
 */
export function fileSaveHandler(dir: string): tf.io.IOHandler {
  return {
    save: async (artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> => {
      let bytes = 0;
      await writeDirAtomic(dir, (tmp) => {
        bytes = writeModelFiles(tmp, artifacts);
      });
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          modelTopologyBytes: JSON.stringify(artifacts.modelTopology).length,
          weightSpecsBytes: JSON.stringify(artifacts.weightSpecs ?? []).length,
          weightDataBytes: bytes,
        },
      };
    },
  };
}

export function fileLoadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const jsonPath = path.join(dir, MODEL_JSON);
      if (!fs.existsSync(jsonPath)) {
        throw new Error(`No saved model at ${dir} (missing ${MODEL_JSON}); pass a run folder or a model folder.`);
      }
      const modelJson = readJson<tf.io.ModelJSON>(jsonPath);
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = manifest.flatMap((group) => group.weights);
        const buffers = manifest.flatMap((group) =>
          group.paths.map((p) => {
            const file = path.join(dir, p);
            if (!fs.existsSync(file)) throw new Error(`Model weights file ${file} is missing; re-save the model.`);
            const buf = fs.readFileSync(file);
            return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
          }),
        );
        return [specs, tf.io.CompositeArrayBuffer.join(buffers)];
      });
    },
  };
}

/** Saves topology + weights to `dir/model.json` and `dir/weights.bin`, atomically. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await model.save(fileSaveHandler(dir));
}

export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(fileLoadHandler(dir));
}

/** Named tensors (optimizer state) to a JSON manifest + binary, inside an existing folder. */
export async function writeNamedTensors(dir: string, basename: string, tensors: NamedTensor[]): Promise<void> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  fs.writeFileSync(path.join(dir, `${basename}.json`), JSON.stringify(specs));
  fs.writeFileSync(path.join(dir, `${basename}.bin`), Buffer.from(data));
}

/** Reads tensors written by writeNamedTensors; the caller owns (and must dispose) them. */
export function readNamedTensors(dir: string, basename: string): NamedTensor[] {
  const specs = readJson<tf.io.WeightsManifestEntry[]>(path.join(dir, `${basename}.json`));
  const buf = fs.readFileSync(path.join(dir, `${basename}.bin`));
  const data = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  const map = tf.io.decodeWeights(data, specs);
  return specs.map((s) => ({ name: s.name, tensor: map[s.name] }));
}
