/**
 * Comparing runs: one row per run with the hyperparameters that differ between them, the best epoch's validation
 * numbers and the test numbers. Runs are ranked on validation only (the lowest validation loss, which is also what
 * the checkpoint keeps); test metrics are shown for reading, never used to pick a run.
 */
import * as path from 'path';
import {
  HYPERPARAMETER_NAMES,
  changedHyperparameters,
  hyperparameters,
  type HyperparameterName,
  type HyperparameterSource,
} from './naming';
import { bestEpoch, listRuns, readRun, resolveRun, type Run } from './read';
import { historySeries, type RunCurves, type RunRoc } from '../viz/figures';

// danfo is loaded on first use: it pulls in a tfjs build, which `npm run runs` only needs when it compares.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type DataFrame = any;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const danfo = (): any => require('danfojs-node');

export type Cell = string | number;
export type ComparisonRow = Record<string, Cell>;

/** The metric the ranking sorts by (ascending); validation only. */
export const RANK_BY = 'val loss';

export const VAL_COLUMNS = ['best epoch', 'epochs run', RANK_BY, 'val acc', 'val AUC', 'val recall', 'val specificity', 'val F1'] as const;
/** The out-of-time validation split at the run's threshold (NaN for runs without one): films unlike training's. */
export const VAL_TIME_COLUMNS = ['val-time AUC', 'val-time recall', 'val-time specificity'] as const;
/** Shown to read, never to rank: a run picked on test would make its test numbers optimistic. */
export const TEST_COLUMNS = ['test acc', 'test recall', 'test specificity', 'test AUC'] as const;

const round = (x: number | undefined, digits = 4): number => (x === undefined || !Number.isFinite(x) ? NaN : Number(x.toFixed(digits)));

/** Hyperparameters whose value is not the same in every run (or, for one run, that differ from the defaults). */
export function variedHyperparameters(runs: readonly Run[], defaults: HyperparameterSource): HyperparameterName[] {
  if (runs.length === 1) return changedHyperparameters(runs[0].config, defaults);
  const values = runs.map((r) => hyperparameters(r.config));
  return HYPERPARAMETER_NAMES.filter((k) => new Set(values.map((v) => v[k])).size > 1);
}

export function comparisonRow(run: Run, shown: readonly HyperparameterName[]): ComparisonRow {
  const hp = hyperparameters(run.config);
  const best = bestEpoch(run.history);
  const row: ComparisonRow = { run: run.name };
  for (const k of shown) row[k] = hp[k];
  const val = run.metrics?.val;
  const test = run.metrics?.test;
  const valTime = run.metrics?.valTime;
  Object.assign(row, {
    status: run.writer ? `${run.status}, being written by pid ${run.writer.pid}` : run.status,
    'best epoch': best?.epoch ?? NaN,
    'epochs run': run.history.length,
    [RANK_BY]: round(best?.val_loss),
    'val acc': round(best?.val_acc),
    'val AUC': round(val?.auc ?? best?.val_auc),
    'val recall': round(val?.recall),
    'val specificity': round(val?.specificity),
    'val F1': round(val?.f1),
    'val-time AUC': round(valTime?.auc),
    'val-time recall': round(valTime?.recall),
    'val-time specificity': round(valTime?.specificity),
    'test acc': round(test?.accuracy),
    'test recall': round(test?.recall),
    'test specificity': round(test?.specificity),
    'test AUC': round(test?.auc),
  });
  return row;
}

export interface Comparison {
  runs: Run[];
  /** Hyperparameter columns shown. */
  varied: HyperparameterName[];
  /** Ranked by validation loss, best first, with a `rank` column; a danfo DataFrame. */
  frame: DataFrame;
  /** Runs left out of the ranking (no epoch finished), with why. */
  unranked: { run: string; why: string }[];
  /** The runs of the ranking, best first. */
  ranked: Run[];
  /** The best run by validation, if any. */
  best?: Run;
}

/** The comparison of `runs` as a danfo DataFrame, sorted on validation loss (best first). */
export function compareRuns(runs: readonly Run[], defaults: HyperparameterSource): Comparison {
  const ranked = runs.filter((r) => bestEpoch(r.history));
  const unranked = runs
    .filter((r) => !bestEpoch(r.history))
    .map((r) => ({ run: r.name, why: `no epoch finished with a validation loss (${r.status})` }));
  const varied = variedHyperparameters(ranked.length ? ranked : runs, defaults);
  const dfd = danfo();
  if (!ranked.length) return { runs: [...runs], varied, frame: new dfd.DataFrame([]), unranked, ranked: [] };
  const frame = new dfd.DataFrame(ranked.map((r) => comparisonRow(r, varied)));
  // resetIndex: danfo's query() after sortValues() matches rows by position, not label, without it.
  const sorted = frame.sortValues(RANK_BY, { ascending: true }).resetIndex();
  sorted.addColumn(
    'rank',
    Array.from({ length: sorted.shape[0] }, (_, i) => i + 1),
    { inplace: true, atIndex: 0 },
  );
  const order = sorted['run'].values as string[];
  const inOrder = order.map((name) => ranked.find((r) => r.name === name)!);
  return { runs: [...runs], varied, frame: sorted, unranked, ranked: inOrder, best: inOrder[0] };
}

/** Rows of the frame where `column` equals `value` (e.g. status = evaluated, lr = 0.001). */
export function filterRows(frame: DataFrame, column: string, value: Cell): DataFrame {
  if (!frame.shape || frame.shape[0] === 0) return frame;
  if (!frame.columns.includes(column)) throw new Error(`No column '${column}' in the comparison; columns: ${frame.columns.join(', ')}.`);
  const asNumber = typeof frame[column].values[0] === 'number' ? Number(value) : value;
  return frame.query(frame[column].eq(asNumber)).resetIndex();
}

/** Mean validation numbers (and the run count) per value of one hyperparameter. */
export function groupByHyperparameter(frame: DataFrame, name: string): DataFrame {
  if (!frame.columns.includes(name)) {
    throw new Error(
      `'${name}' is not a column of the comparison (only hyperparameters that differ between the runs are); columns: ${frame.columns.join(', ')}.`,
    );
  }
  const aggs: Record<string, string> = { run: 'count', [RANK_BY]: 'mean', 'val acc': 'mean', 'val AUC': 'mean' };
  return frame.groupby([name]).agg(aggs);
}

/** The group-by table when `name` is one of the hyperparameters that differ, else a sentence saying it is not. */
export function groupIfVaried(c: Comparison, name: string): DataFrame | string {
  if (!(c.varied as readonly string[]).includes(name) || !c.ranked.length) {
    return `'${name}' does not differ between these runs (varied: ${c.varied.join(', ') || 'none'}); nothing to group.`;
  }
  return groupByHyperparameter(c.frame, name);
}

/** Frame rows as plain objects (danfo's toJSON), for tables and tests. */
export function frameRows(frame: DataFrame): ComparisonRow[] {
  if (!frame.shape || frame.shape[0] === 0) return [];
  return danfo().toJSON(frame) as ComparisonRow[];
}

const cellText = (v: Cell): string => (typeof v === 'number' ? (Number.isNaN(v) ? '-' : String(v)) : v);

/** A plain-text table (for the terminal), columns padded to their widest cell. */
export function textTable(rows: readonly ComparisonRow[], columns = rows.length ? Object.keys(rows[0]) : []): string {
  const cells = [columns, ...rows.map((r) => columns.map((c) => cellText(r[c] ?? '')))];
  const widths = columns.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(cells[0]), line(widths.map((w) => '-'.repeat(w))), ...cells.slice(1).map(line)].join('\n');
}

/** The comparison as the CLI prints it: the ranked table, what was left out, and the pick (by validation). */
export function formatComparison(c: Comparison): string {
  const rows = frameRows(c.frame);
  const lines: string[] = [];
  if (rows.length) {
    lines.push(textTable(rows));
    lines.push('', `Ranked by ${RANK_BY} at each run's best epoch (validation only); test columns are for reading, never for choosing.`);
    if (c.best) lines.push(`Best by validation: ${c.best.name}`);
  } else {
    lines.push('No run has a finished epoch to compare.');
  }
  lines.push(...unrankedLines(c));
  return lines.join('\n');
}

const unrankedLines = (c: Comparison) => c.unranked.map((u) => `not ranked: ${u.run}: ${u.why}`);

/** What notebook 06 prints under the table: runs that could not be read, the pick (by validation), runs left unranked. */
export function comparisonNotes(c: Comparison, problems: ReadonlyArray<{ dir: string; message: string }> = []): string[] {
  return [
    ...problems.map((p) => `skipped ${p.dir}: ${p.message}`),
    c.best ? `best by validation: ${c.best.name}` : 'no run has a finished epoch yet',
    ...unrankedLines(c),
  ];
}

/** Runs named by reference (path, folder name or unique part, see resolveRun), or every run under `out`. */
export function selectRuns(refs: readonly string[], out: string): { runs: Run[]; problems: { dir: string; message: string }[] } {
  if (!refs.length) return listRuns(out);
  return { runs: refs.map((ref) => readRun(resolveRun(ref, out))), problems: [] };
}

/** A run's short name for legends: the label after the timestamp. */
export function shortRunName(run: Run): string {
  return path.basename(run.dir).replace(/^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-/, '');
}

/** Each run's training and validation curves, for runCurvesFigure. */
export function runCurves(runs: readonly Run[]): RunCurves[] {
  return runs.map((r) => ({ name: shortRunName(r), history: historySeries(r.history) }));
}

/** ROC curves of the evaluated runs among `runs` on one split (validation by default: what selection may use). */
export function runRocs(runs: readonly Run[], split: 'val' | 'test' = 'val'): RunRoc[] {
  return runs.filter((r) => r.metrics).map((r) => ({ name: shortRunName(r), roc: r.metrics![split].roc, auc: r.metrics![split].auc }));
}
