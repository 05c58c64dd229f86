/**
 * The report's first page (index.html): what data the notebooks ran on, how it was split, the run's hyperparameters,
 * the headline validation and test metrics with the threshold rule, and a link to every executed notebook page.
 * Everything is read from the run folder the notebooks wrote, through the same readers the pipeline uses.
 */
import * as fs from 'fs';
import * as path from 'path';
import { formatAugment } from '../augment';
import { loadSplit } from '../data/split';
import { THRESHOLD_SPLIT_NAMES, type SplitMetrics } from '../evaluate';
import { formatThresholdRule, type RunConfigFile } from '../pipeline';
import { readJson } from '../files';
import { RUN_FILES } from '../runs/layout';
import { readMetrics } from '../runs/metrics-file';
import type { EpochLogs } from '../train/train';
import { LABELS, type ImageRecord, type Label, type SplitName } from '../types';

export interface ReportPage {
  name: string;
  title: string;
  page: string;
  seconds: number;
}

export interface SplitCounts {
  images: Record<Label, number>;
  patients: number;
}

/** What the summary page shows about one run; every part is optional because a notebook may not have written it. */
export interface RunSummary {
  runDir: string;
  config?: RunConfigFile;
  /** `valTime`: the out-of-time validation part, when the split has one. */
  split?: { seed: number; testSource: 'official' | 'carved'; counts: Partial<Record<SplitName | 'valTime', SplitCounts>> };
  history?: EpochLogs[];
  metrics?: { threshold: number; rule: string; note?: string; on?: string; val: SplitMetrics; test: SplitMetrics; valTime?: SplitMetrics };
  /** A browser app saved with the run (`app/index.html`), if any. */
  app?: string;
  /** Files that were present but could not be read, with why. */
  problems: string[];
}

const SPLITS: SplitName[] = ['train', 'val', 'test'];

/** Reads what the run folder holds; a missing file leaves its part out, an unreadable one is named in `problems`. */
export async function readRunSummary(runDir: string): Promise<RunSummary> {
  const summary: RunSummary = { runDir, problems: [] };
  const file = (name: string) => path.join(runDir, name);
  const attempt = async (name: string, read: () => Promise<void> | void) => {
    if (!fs.existsSync(file(name))) return;
    try {
      await read();
    } catch (err) {
      summary.problems.push(`${name}: ${(err as Error).message}`);
    }
  };
  await attempt(RUN_FILES.config, () => {
    summary.config = readJson<RunConfigFile>(file(RUN_FILES.config));
  });
  await attempt(RUN_FILES.split, async () => {
    const split = await loadSplit(file(RUN_FILES.split));
    const counts: Partial<Record<SplitName | 'valTime', SplitCounts>> = {};
    const parts: Array<[SplitName | 'valTime', ImageRecord[]]> = SPLITS.map((n) => [n, split[n]]);
    if (split.valTime?.length) parts.push(['valTime', split.valTime]);
    for (const [name, records] of parts) {
      const images = Object.fromEntries(LABELS.map((l) => [l, records.filter((r) => r.label === l).length])) as Record<Label, number>;
      counts[name] = { images, patients: new Set(records.map((r) => r.patient)).size };
    }
    summary.split = { seed: split.seed, testSource: split.testSource, counts };
  });
  await attempt(RUN_FILES.historyJson, () => {
    summary.history = readJson<EpochLogs[]>(file(RUN_FILES.historyJson));
  });
  await attempt(RUN_FILES.metrics, () => {
    const m = readMetrics(file(RUN_FILES.metrics));
    summary.metrics = {
      threshold: m.threshold,
      rule: formatThresholdRule(m.thresholdRule),
      note: m.thresholdNote,
      on: THRESHOLD_SPLIT_NAMES[m.thresholdOn ?? 'val'],
      val: m.val,
      test: m.test,
      valTime: m.valTime,
    };
  });
  if (fs.existsSync(file(path.join('app', 'index.html')))) summary.app = file(path.join('app', 'index.html'));
  return summary;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const pct = (x: number | undefined) => (typeof x === 'number' && Number.isFinite(x) ? (100 * x).toFixed(1) : '–');
const num = (x: number | undefined, digits = 3) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–');

/** `recall=0.98` in words, so a reader need not know the flag syntax. */
export function describeRule(rule: string): string {
  const recall = /^recall=([0-9.]+)$/.exec(rule);
  if (recall) return `the highest threshold that keeps validation recall (sensitivity) at ${pct(Number(recall[1]))}% or more`;
  if (rule === 'youden') return "Youden's J on validation (the threshold that maximises sensitivity + specificity − 1)";
  const fixed = /^fixed=([0-9.]+)$/.exec(rule);
  if (fixed) return `a fixed threshold of ${fixed[1]}`;
  return rule;
}

/** Notebook pages that compare runs (e.g. `06-compare-runs`) go in the runs-comparison section. */
export function isComparisonPage(page: ReportPage): boolean {
  return /compare/i.test(page.name);
}

function dataSection(run: RunSummary): string {
  const cfg = run.config;
  const parts: string[] = [];
  if (cfg) {
    const limit = cfg.config.limit ? ` (at most ${cfg.config.limit} images per folder and class)` : '';
    parts.push(`<p>Images from <code>${escapeHtml(cfg.dataRoot || cfg.config.data)}</code>${limit}.</p>`);
    if (/demo/.test(cfg.dataRoot || cfg.config.data)) {
      parts.push('<p class="warn">This is the synthetic demo set, not medical images: the numbers below say nothing about pneumonia.</p>');
    }
  }
  if (run.split) {
    const s = run.split;
    const label = (name: string) => (name === 'valTime' ? 'out-of-time val' : name);
    const rows = Object.entries(s.counts)
      .map(([name, c]) => {
        const total = c.images.NORMAL + c.images.PNEUMONIA;
        return `<tr><th>${label(name)}</th><td>${c.images.NORMAL}</td><td>${c.images.PNEUMONIA}</td><td>${total}</td><td>${c.patients}</td></tr>`;
      })
      .join('');
    const fractions = cfg
      ? `, validation ${pct(cfg.config.split.valFraction)}%` +
        (s.testSource === 'carved' ? `, test ${pct(cfg.config.split.testFraction)}%` : '')
      : '';
    parts.push(
      `<p>Split grouped by patient (no patient is in two splits) and stratified by label, seed ${s.seed}${fractions}. ` +
        `Test set: ${s.testSource === 'official' ? "the dataset's own <code>test/</code> folder, never used for training or model selection" : 'carved from the training images, grouped by patient (the dataset has no test/ folder here)'}.</p>`,
      `<table class="grid"><thead><tr><th>split</th><th>NORMAL</th><th>PNEUMONIA</th><th>images</th><th>patients</th></tr></thead><tbody>${rows}</tbody></table>`,
    );
  }
  return parts.length ? parts.join('\n') : '<p class="missing">No split or config in the run folder.</p>';
}

function hyperparameterSection(run: RunSummary): string {
  if (!run.config) return '<p class="missing">No config.json in the run folder.</p>';
  const c = run.config.config;
  const t = c.train;
  const epochsRun = run.history?.length;
  const best = run.history?.length ? run.history.reduce((b, h) => (h.val_loss < b.val_loss ? h : b)).epoch : undefined;
  const rows: [string, string][] = [
    ['model', `${c.variant} CNN, ${c.imageSize}×${c.imageSize} grayscale input`],
    [
      'epochs',
      epochsRun !== undefined
        ? `${epochsRun} run of ${t.epochs}${best !== undefined ? `, best by validation loss: epoch ${best}` : ''}`
        : String(t.epochs),
    ],
    ['batch size', String(t.batchSize)],
    ['optimizer', `Adam, learning rate ${t.learningRate}`],
    [
      'learning-rate schedule',
      `× ${c.reduceLR.factor} after ${c.reduceLR.patience} epochs without validation-loss improvement (min ${c.reduceLR.minLr})`,
    ],
    ['early stopping', c.patience ? `patience ${c.patience} epochs on validation loss` : 'off'],
    ['class weights', t.classWeights],
    ['augmentation', formatAugment(t.augment) || 'none'],
    ['seed', String(t.seed)],
    ['backend', run.config.backend.replace(/^backend:\s*/, '')],
    ...(run.config.cpu ? [['CPU', run.config.cpu] as [string, string]] : []),
  ];
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

function metricsSection(run: RunSummary): string {
  const m = run.metrics;
  if (!m) return '<p class="missing">No metrics.json in the run folder (05-evaluate writes it).</p>';
  const row = (name: string, s: SplitMetrics) =>
    `<tr><th>${name}</th><td>${s.count ?? '–'}</td><td>${pct(s.accuracy)}</td><td>${pct(s.precision)}</td><td>${pct(s.recall)}</td>` +
    `<td>${pct(s.specificity)}</td><td>${pct(s.f1)}</td><td>${num(s.auc)}</td></tr>`;
  const c = m.test.confusion;
  return (
    `<p class="rule">Threshold <strong>${num(m.threshold, 4)}</strong>: ${escapeHtml(describeRule(m.rule))} (<code>${escapeHtml(m.rule)}</code>), ` +
    `chosen on the ${escapeHtml(m.on ?? 'validation split')} and applied unchanged to test. An image is called PNEUMONIA when the model's probability is at or above it.</p>\n` +
    (m.note ? `<p class="rule-note">Note: ${escapeHtml(m.note)}.</p>\n` : '') +
    `<table class="grid metrics"><thead><tr><th></th><th>images</th><th>accuracy %</th><th>precision %</th><th>recall %</th><th>specificity %</th><th>F1 %</th><th>AUC</th></tr></thead>` +
    `<tbody>${row('validation', m.val)}${m.valTime ? row('out-of-time validation', m.valTime) : ''}${row('test', m.test)}</tbody></table>\n` +
    (c ? `<p>Test confusion: ${c.tp} true positives, ${c.fp} false positives, ${c.tn} true negatives, ${c.fn} false negatives.</p>` : '')
  );
}

function pageList(pages: ReportPage[]): string {
  return pages
    .map(
      (e) =>
        `<li><a href="${encodeURI(e.page)}">${escapeHtml(e.title)}</a> <span class="meta">(${escapeHtml(e.name)}, executed in ${e.seconds.toFixed(0)} s)</span></li>`,
    )
    .join('\n');
}

export interface SummaryOptions {
  pages: ReportPage[];
  run: RunSummary | null;
  /** Folder the report is written to, for relative links into the run folder. */
  outDir: string;
  generatedAt: Date;
  /** The report flags, for the reproduce line. */
  settings: Record<string, unknown>;
  noInput?: boolean;
}

export function summaryHtml(opts: SummaryOptions): string {
  const { run } = opts;
  const comparison = opts.pages.filter(isComparisonPage);
  const settingRows = Object.entries(opts.settings)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td><code>${escapeHtml(String(v))}</code></td></tr>`)
    .join('');
  const app = run?.app ? path.relative(opts.outDir, run.app).split(path.sep).join('/') : null;
  const body = run
    ? `<section id="data"><h2>Data and split</h2>\n${dataSection(run)}</section>
<section id="hyperparameters"><h2>Training</h2>\n${hyperparameterSection(run)}</section>
<section id="metrics"><h2>Headline metrics</h2>\n${metricsSection(run)}</section>
${run.problems.length ? `<p class="warn">Unreadable run files: ${run.problems.map(escapeHtml).join('; ')}</p>` : ''}`
    : '<p class="missing">The notebooks wrote no run folder, so there is no run to summarise.</p>';
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pneumonia detection in chest X-rays: report</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}.meta,.sub{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5rem 0}th,td{text-align:left;padding:3px 14px 3px 0;vertical-align:top}
table.grid td,table.grid thead th{text-align:right}table.grid th:first-child{text-align:left}
table.grid tbody tr:nth-child(odd){background:#f6f8fa}table.kv th{font-weight:600;white-space:nowrap}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4rem .8rem}.missing{color:#a33}
li{margin:.3rem 0}code{background:#f3f3f3;padding:0 3px;border-radius:3px}.app{font-size:1.1em}
</style>
</head><body>
<h1>Pneumonia detection in chest X-rays</h1>
<p class="sub">A from-scratch CNN on the Kermany et al. (2018) chest X-ray data, trained and evaluated by the notebooks below,
executed headless with <code>jupyter nbconvert --execute</code> on ${escapeHtml(opts.generatedAt.toISOString())}.
Every page opens offline; charts are interactive Plotly figures.${opts.noInput ? ' Code is hidden (<code>--no-input</code>).' : ''}</p>
${app ? `<p class="app" id="app"><a href="${encodeURI(app)}">Try the model in your browser</a> <span class="meta">(the app saved with this run)</span></p>` : ''}
${body}
<section id="notebooks"><h2>Notebooks</h2>
<ol class="pages">
${pageList(opts.pages)}
</ol></section>
<!-- RUNS COMPARISON: a notebook whose name contains "compare" (e.g. 06-compare-runs) is listed here automatically;
     the comparison itself lives in that notebook, not in this page. -->
<section id="runs-comparison"><h2>Comparing runs</h2>
${comparison.length ? `<ul>${pageList(comparison)}</ul>` : '<p class="meta">No runs-comparison notebook in this report yet; a <code>NN-compare-runs</code> notebook gets its page linked here.</p>'}
</section>
<section id="settings"><h2>Report settings</h2>
<table class="kv">${settingRows || '<tr><td>notebook defaults</td></tr>'}</table>
${run ? `<p class="meta">Run folder: <code>${escapeHtml(run.runDir)}</code></p>` : ''}
</section>
</body></html>
`;
}
