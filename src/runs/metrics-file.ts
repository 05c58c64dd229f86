/**
 * metrics.json: one schema, written by `npm start` and notebook 05 alike, read by predict, the comparison and
 * the report. The reader checks every field it relies on, so a file from an older writer (05 used to write
 * `rule: "youden"` instead of `thresholdRule`) fails with the file's name and the fix instead of printing "rule ?".
 */
import * as fs from 'fs';
import type { EvalResult, SplitMetrics, ThresholdSplit } from '../evaluate';
import type { ThresholdRule } from '../evaluate/metrics';
import { writeJsonAtomic } from '../files';

export const METRICS_SCHEMA = 1;

export interface MetricsFile {
  schema: typeof METRICS_SCHEMA;
  /** Chosen on validation with `thresholdRule`; predict PNEUMONIA when probability >= threshold. */
  threshold: number;
  thresholdRule: ThresholdRule;
  /** The validation split the rule was applied to; absent: val. */
  thresholdOn?: ThresholdSplit;
  /** Test-time augmentation views averaged; absent: 1. */
  tta?: number;
  /** Why the rule applied is not the one configured (see applicableRule in src/metrics.ts). */
  thresholdNote?: string;
  val: SplitMetrics;
  test: SplitMetrics;
  /** The out-of-time validation split at the same threshold; absent when the run had none. */
  valTime?: SplitMetrics;
  /** 1-based epoch with the lowest val_loss, whose weights were evaluated unless `averagedEpochs` is given; null
   * when no checkpoint was kept. */
  bestEpoch: number | null;
  /** Present when the evaluated weights are the mean of these epochs' (weight averaging, src/train/swa.ts). */
  averagedEpochs?: number[];
  epochsRun: number;
  imageSize: number;
  /** Who wrote it: 'npm start' or a notebook name, for people reading the file. */
  writtenBy: string;
}

/** What a writer of metrics.json adds about the run to its evaluation. */
export interface EvaluatedRunInfo {
  bestEpoch: number | null;
  averagedEpochs?: number[];
  epochsRun: number;
  imageSize: number;
  writtenBy: string;
}

/** The file form of an evaluation (the per-image rows go to predictions.csv). */
export function toMetricsFile(ev: EvalResult, { averagedEpochs, ...run }: EvaluatedRunInfo): MetricsFile {
  return {
    schema: METRICS_SCHEMA,
    threshold: ev.threshold,
    thresholdRule: ev.thresholdRule,
    ...(ev.thresholdOn ? { thresholdOn: ev.thresholdOn } : {}),
    ...(ev.tta ? { tta: ev.tta } : {}),
    ...(ev.thresholdNote ? { thresholdNote: ev.thresholdNote } : {}),
    val: ev.val,
    test: ev.test,
    ...(ev.valTime ? { valTime: ev.valTime } : {}),
    ...run,
    ...(averagedEpochs?.length ? { averagedEpochs } : {}),
  };
}

export function writeMetrics(file: string, metrics: MetricsFile): void {
  writeJsonAtomic(file, metrics);
}

const FIX = 're-evaluate the run (notebook 05-evaluate, or `npm start -- --resume RUN`) to rewrite it';

class MetricsError extends Error {
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}; ${FIX}.`);
    this.name = 'MetricsError';
  }
}

// JSON has no NaN: JSON.stringify writes NaN (an AUC on a one-class split) as null.
const numberOrNaN = (v: unknown): number | undefined => (typeof v === 'number' ? v : v === null ? NaN : undefined);

function checkRule(rule: unknown, file: string): ThresholdRule {
  const r = rule as Record<string, unknown> | undefined;
  if (!r || typeof r !== 'object') throw new MetricsError(file, "field 'thresholdRule' is missing or not an object");
  if (r.kind === 'youden') return { kind: 'youden' };
  if (r.kind === 'recall' && typeof r.target === 'number') return { kind: 'recall', target: r.target };
  if (r.kind === 'fixed' && typeof r.value === 'number') return { kind: 'fixed', value: r.value };
  throw new MetricsError(file, `field 'thresholdRule' ${JSON.stringify(rule)} is not youden, recall {target} or fixed {value}`);
}

const SPLIT_NUMBERS = ['accuracy', 'precision', 'recall', 'specificity', 'f1', 'auc', 'averagePrecision', 'count'] as const;

function checkSplit(value: unknown, name: 'val' | 'test' | 'valTime', file: string): SplitMetrics {
  const m = value as Record<string, unknown> | undefined;
  if (!m || typeof m !== 'object') throw new MetricsError(file, `field '${name}' is missing`);
  const out: Record<string, unknown> = { ...m };
  for (const key of SPLIT_NUMBERS) {
    const n = numberOrNaN(m[key]);
    if (n === undefined) throw new MetricsError(file, `field '${name}.${key}' is missing or not a number`);
    out[key] = n;
  }
  const c = m.confusion as Record<string, unknown> | undefined;
  if (!c || !['tp', 'fp', 'tn', 'fn'].every((k) => typeof c[k] === 'number')) {
    throw new MetricsError(file, `field '${name}.confusion' must hold numbers tp, fp, tn, fn`);
  }
  const roc = m.roc as Record<string, unknown> | undefined;
  if (!roc || !Array.isArray(roc.fpr) || !Array.isArray(roc.tpr) || !Array.isArray(roc.thresholds)) {
    throw new MetricsError(file, `field '${name}.roc' must hold arrays fpr, tpr, thresholds`);
  }
  // roc.thresholds[0] is +Infinity, which JSON wrote as null.
  out.roc = { fpr: roc.fpr, tpr: roc.tpr, thresholds: (roc.thresholds as unknown[]).map((t) => (t === null ? Infinity : t)) };
  return out as unknown as SplitMetrics;
}

function checkEpochs(value: unknown, file: string): number[] {
  if (!Array.isArray(value) || !value.length || !value.every((e) => Number.isInteger(e) && e >= 1)) {
    throw new MetricsError(file, "field 'averagedEpochs' must be a list of whole epochs >= 1");
  }
  return value as number[];
}

/** Checks a parsed metrics.json; `file` names it in every error. */
export function parseMetrics(value: unknown, file: string): MetricsFile {
  const m = value as Record<string, unknown> | null;
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw new MetricsError(file, 'expected a JSON object');
  if (m.schema !== METRICS_SCHEMA) {
    const hint = 'rule' in m && !('thresholdRule' in m) ? " (it has 'rule' but no 'thresholdRule': an older 05-evaluate wrote it)" : '';
    throw new MetricsError(file, `schema is ${JSON.stringify(m.schema)}, expected ${METRICS_SCHEMA}${hint}`);
  }
  if (typeof m.threshold !== 'number' || !(m.threshold >= 0 && m.threshold <= 1)) {
    throw new MetricsError(file, `field 'threshold' must be a number in [0, 1] (got ${JSON.stringify(m.threshold)})`);
  }
  if (!(m.bestEpoch === null || Number.isInteger(m.bestEpoch)))
    throw new MetricsError(file, "field 'bestEpoch' must be a whole number or null");
  for (const key of ['epochsRun', 'imageSize'] as const) {
    if (!Number.isInteger(m[key])) throw new MetricsError(file, `field '${key}' must be a whole number`);
  }
  return {
    schema: METRICS_SCHEMA,
    threshold: m.threshold,
    thresholdRule: checkRule(m.thresholdRule, file),
    ...(m.thresholdOn === 'valTime' || m.thresholdOn === 'pooled' ? { thresholdOn: m.thresholdOn } : {}),
    ...(Number.isInteger(m.tta) && (m.tta as number) > 1 ? { tta: m.tta as number } : {}),
    ...(typeof m.thresholdNote === 'string' ? { thresholdNote: m.thresholdNote } : {}),
    val: checkSplit(m.val, 'val', file),
    test: checkSplit(m.test, 'test', file),
    ...(m.valTime !== undefined ? { valTime: checkSplit(m.valTime, 'valTime', file) } : {}),
    bestEpoch: m.bestEpoch as number | null,
    ...(m.averagedEpochs !== undefined ? { averagedEpochs: checkEpochs(m.averagedEpochs, file) } : {}),
    epochsRun: m.epochsRun as number,
    imageSize: m.imageSize as number,
    writtenBy: typeof m.writtenBy === 'string' ? m.writtenBy : 'unknown',
  };
}

/** Reads and checks metrics.json; every failure names the file and how to rewrite it. */
export function readMetrics(file: string): MetricsFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`${file} is missing or unreadable; evaluate the run first (notebook 05-evaluate or npm start).`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new MetricsError(file, 'not valid JSON');
  }
  return parseMetrics(parsed, file);
}
