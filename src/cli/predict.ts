/**
 * `npm run predict -- [--model RUN_DIR|MODEL_DIR] [--gradcam OUT_DIR] FILE...`
 * Classifies X-ray images with a saved model, using the decision threshold the run chose on its validation split.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { InvalidArgumentError } from 'commander';
import { type CliIo, defaultIo, parseCommand, cliProgram, runAsScript } from './common';
import { initBackend } from '../accel';
import { decodeFile, type ResizeFit } from '../data/decode';
import { gradCam, gradCamOverlayPng } from '../evaluate/gradcam';
import { DEFAULT_RUNS_DIR, RUN_FILES, isRunDir } from '../runs/layout';
import { loadModel } from '../runs/model-files';
import { findLatestRun, readRunConfig, resolveRun } from '../runs/read';
import { formatThresholdRule } from '../runs/naming';
import { readMetrics } from '../runs/metrics-file';
import { LABELS } from '../types';
import { modelInputSize, predictImage } from '../model/input';

export type { CliIo };

export interface ResolvedModel {
  modelDir: string;
  /** The run folder holding metrics.json and config.json, when the model came from one. */
  runDir?: string;
}

/** Accepts a run folder (with model/), a model folder (with model.json), or nothing (the newest run). */
export function resolveModel(given: string | undefined, runsDir = DEFAULT_RUNS_DIR): ResolvedModel {
  if (!given) {
    const latest = findLatestRun(runsDir);
    if (!latest) throw new Error(`No trained model under ${runsDir}; train one with 'npm start' or pass --model DIR.`);
    return { modelDir: path.join(latest, RUN_FILES.model), runDir: latest };
  }
  const dir = path.resolve(given);
  if (fs.existsSync(path.join(dir, 'model.json'))) {
    const parent = path.dirname(dir);
    return { modelDir: dir, runDir: isRunDir(parent) ? parent : undefined };
  }
  // A run folder, or a run's name (or a unique part of it) under --runs.
  let runDir: string;
  try {
    runDir = fs.existsSync(path.join(dir, RUN_FILES.model, 'model.json')) ? dir : resolveRun(given, runsDir);
  } catch (err) {
    throw new Error(`--model ${given}: no model.json there nor in ${path.join(given, RUN_FILES.model)}, and ${(err as Error).message}`);
  }
  if (!fs.existsSync(path.join(runDir, RUN_FILES.model, 'model.json'))) {
    throw new Error(`--model ${given}: run ${runDir} has no trained model yet (${RUN_FILES.model}/model.json).`);
  }
  return { modelDir: path.join(runDir, RUN_FILES.model), runDir };
}

/** The run's threshold from metrics.json; 0.5 (with a note) when the model has no run around it. */
export function runThreshold(runDir: string | undefined): { threshold: number; source: string } {
  const file = runDir ? path.join(runDir, RUN_FILES.metrics) : undefined;
  if (file && fs.existsSync(file)) {
    // A malformed file is an error naming it: guessing 0.5 would silently change every prediction.
    const metrics = readMetrics(file);
    return { threshold: metrics.threshold, source: `${file} (rule ${formatThresholdRule(metrics.thresholdRule)}, chosen on validation)` };
  }
  return { threshold: 0.5, source: 'default 0.5 (no metrics.json next to the model)' };
}

/** The run's resize fit from config.json ('fill' when the model has no run around it). */
export function runFit(runDir: string | undefined): ResizeFit {
  return runDir && isRunDir(runDir) ? (readRunConfig(runDir).fit ?? 'fill') : 'fill';
}

function unitInterval(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError('expected a number in [0, 1].');
  return n;
}

/** Decodes one file the way training did and classifies it; throws a message naming what is wrong. */
export async function classifyFile(
  model: tf.LayersModel,
  file: string,
  fit: ResizeFit = 'fill',
): Promise<{ pixels: Uint8Array; probability: number }> {
  if (!fs.existsSync(file)) throw new Error('file not found');
  const pixels = await decodeFile(file, { size: modelInputSize(model), fit });
  return { pixels, probability: predictImage(model, pixels) };
}

export interface Prediction {
  file: string;
  probability?: number;
  label?: string;
  error?: string;
  gradcam?: string;
}

export async function main(argv: string[] = process.argv.slice(2), io: CliIo = defaultIo): Promise<number> {
  const program = cliProgram('npm run predict --', io)
    .description('Classify chest X-ray images with a trained model (default: the newest run in outputs/runs).')
    .argument('<files...>', 'image files (JPEG or PNG)')
    .option('--model <run>', 'run folder, run name under --runs, or model folder (default: the newest run)')
    .option('--gradcam <dir>', 'also write Grad-CAM overlays (PNG) into this folder')
    .option('--threshold <p>', "override the run's threshold", unitInterval)
    .option('--runs <dir>', 'where to look for the newest run', DEFAULT_RUNS_DIR);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const files = program.args;
  const flags = program.opts<{ model?: string; gradcam?: string; threshold?: number; runs: string }>();

  let model: tf.LayersModel;
  let threshold: number;
  let fit: ResizeFit;
  try {
    await initBackend({ quiet: true });
    const resolved = resolveModel(flags.model, flags.runs);
    model = await loadModel(resolved.modelDir);
    const fromRun = runThreshold(resolved.runDir);
    threshold = flags.threshold ?? fromRun.threshold;
    fit = runFit(resolved.runDir);
    io.err(
      `Model: ${resolved.modelDir}; threshold ${threshold.toFixed(4)} from ${flags.threshold !== undefined ? '--threshold' : fromRun.source}`,
    );
    if (flags.gradcam) fs.mkdirSync(flags.gradcam, { recursive: true });
  } catch (err) {
    io.err(`predict: ${(err as Error)?.message ?? String(err)}`);
    return 1;
  }

  const size = modelInputSize(model);
  const results: Prediction[] = [];
  io.out(['file', 'probability', 'label'].join('\t'));
  for (const file of files) {
    try {
      const { pixels, probability } = await classifyFile(model, file, fit);
      const label = probability >= threshold ? LABELS[1] : LABELS[0];
      const row: Prediction = { file, probability, label };
      if (flags.gradcam) {
        const { heatmap } = await gradCam(model, pixels, size);
        const png = await gradCamOverlayPng(pixels, heatmap, size, { outSize: Math.max(size, 224) });
        row.gradcam = path.join(flags.gradcam, `${path.parse(file).name}.gradcam.png`);
        fs.writeFileSync(row.gradcam, png);
      }
      results.push(row);
      io.out([file, probability.toFixed(4), label].join('\t') + (row.gradcam ? `\t${row.gradcam}` : ''));
    } catch (err) {
      const message = (err as Error)?.message ?? String(err);
      results.push({ file, error: message });
      io.err(`${file}: cannot classify: ${message}`);
    }
  }
  model.dispose();
  const failed = results.filter((r) => r.error).length;
  if (failed) io.err(`${failed} of ${files.length} file(s) could not be classified.`);
  return failed ? 1 : 0;
}

runAsScript(module, main);
