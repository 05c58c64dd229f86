/**
 * The offline HTML report: execute the numbered notebooks headless with nbconvert (in order: later notebooks
 * reuse earlier ones' outputs), export each to HTML, and write an index page linking them.
 *
 * Each exported page would carry its own 10 MB copy of plotly.js; the report keeps one shared `plotly.js` file next
 * to the pages instead, so the folder stays small and still opens offline from disk (file://).
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { APT_HINT, hasJupyterCommand, jupyterExecutable, KERNEL_NAME, registerKernel, repoRoot } from './jupyter';
import { paramEnvName } from './notebook';
import { PLOTLY_SCRIPT_ID } from './viz/display';

export const NOTEBOOKS_DIR = path.join(repoRoot, 'notebooks');
export const DEFAULT_REPORT_DIR = path.join(repoRoot, 'outputs', 'report');
export const PLOTLY_FILE = 'plotly.js';

/** Numbered notebooks (`NN-name.ipynb`) in run order. */
export function listNotebooks(dir = NOTEBOOKS_DIR): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d+-.*\.ipynb$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Throws a message naming the Debian packages when Jupyter or nbconvert is missing. */
export function assertNbconvert(): void {
  if (!jupyterExecutable()) {
    throw new Error(`jupyter is not installed (not on PATH). Install nbconvert and the kernel machinery:\n  ${APT_HINT.nbconvert}`);
  }
  if (!hasJupyterCommand('nbconvert')) {
    throw new Error(`\`jupyter nbconvert\` is not available. Install it:\n  ${APT_HINT.nbconvert}`);
  }
}

/** Quick-report knobs; each becomes a `PNEUMO_*` environment variable read by the notebooks' parameters cells. */
export interface NotebookSettings {
  data?: string;
  epochs?: number;
  limit?: number;
  imageSize?: number;
  batchSize?: number;
  augment?: string;
  seed?: number;
  /** Where the notebooks write split.json, the decode cache and the run directory. */
  out?: string;
  /** Model variant ('seed' or 'small'). */
  model?: string;
}

export function notebookEnv(settings: NotebookSettings): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value !== undefined && value !== null) env[paramEnvName(key)] = String(value);
  }
  return env;
}

export class NotebookError extends Error {
  constructor(
    readonly notebook: string,
    message: string,
  ) {
    super(message);
    this.name = 'NotebookError';
  }
}

/** The cell error nbconvert printed, without the Python traceback that leads up to it. */
export function summarizeNbconvertError(stderr: string): string {
  const marker = stderr.indexOf('An error occurred while executing the following cell');
  const text = marker >= 0 ? stderr.slice(marker) : stderr;
  const lines = text.trim().split('\n');
  return lines.slice(0, 60).join('\n');
}

export interface ExecuteOptions {
  outDir: string;
  env?: Record<string, string>;
  /** Per-cell limit, seconds. */
  cellTimeoutS?: number;
  /** 'html' for the report, 'notebook' to keep an executed .ipynb. */
  to?: 'html' | 'notebook';
}

export interface ExecutedNotebook {
  notebook: string;
  output: string;
  seconds: number;
}

/** Executes one notebook with nbconvert; rejects with the failing cell's error when any cell fails. */
export function executeNotebook(file: string, opts: ExecuteOptions): Promise<ExecutedNotebook> {
  const to = opts.to ?? 'html';
  const base = path.basename(file, '.ipynb');
  fs.mkdirSync(opts.outDir, { recursive: true });
  const args = [
    'nbconvert',
    `--to=${to}`,
    '--execute',
    `--ExecutePreprocessor.kernel_name=${KERNEL_NAME}`,
    `--ExecutePreprocessor.timeout=${opts.cellTimeoutS ?? 1800}`,
    `--output-dir=${opts.outDir}`,
    `--output=${base}`,
    file,
  ];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(jupyterExecutable() ?? 'jupyter', args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', () => undefined);
    child.on('error', (err) => reject(new NotebookError(base, `could not start jupyter: ${err.message}\n  ${APT_HINT.nbconvert}`)));
    child.on('close', (code) => {
      const seconds = (Date.now() - started) / 1000;
      if (code !== 0) {
        reject(new NotebookError(base, `${base}.ipynb failed after ${seconds.toFixed(0)} s:\n${summarizeNbconvertError(stderr)}`));
        return;
      }
      resolve({ notebook: file, output: path.join(opts.outDir, `${base}.${to === 'html' ? 'html' : 'ipynb'}`), seconds });
    });
  });
}

/** Replaces the inlined plotly.js bundle with a reference to one shared file; returns the bundle found, if any. */
export function externalizePlotly(html: string, src = PLOTLY_FILE): { html: string; bundle?: string } {
  const open = html.indexOf(`<script id="${PLOTLY_SCRIPT_ID}"`);
  if (open < 0) return { html };
  const bodyStart = html.indexOf('>', open) + 1;
  const close = html.indexOf('</script>', bodyStart);
  if (close < 0) return { html };
  const bundle = html.slice(bodyStart, close);
  const replaced = `<script id="${PLOTLY_SCRIPT_ID}" src="${src}"></script>`;
  return { html: html.slice(0, open) + replaced + html.slice(close + '</script>'.length), bundle };
}

/**
 * Drops references to files that only exist on the machine that exported the page (Debian's nbconvert links
 * require.js and MathJax from /usr/share/javascript): the report must open anywhere, with no failed loads.
 */
export function dropLocalScriptRefs(html: string): string {
  return html.replace(/<script[^>]*\ssrc="file:\/\/[^"]*"[^>]*>\s*<\/script>/g, '');
}

/** The notebook's first markdown heading, for the table of contents. */
export function notebookTitle(file: string): string {
  const nb = JSON.parse(fs.readFileSync(file, 'utf8')) as { cells: { cell_type: string; source: string[] | string }[] };
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'markdown') continue;
    const text = Array.isArray(cell.source) ? cell.source.join('') : cell.source;
    const m = /^#\s+(.+)$/m.exec(text);
    if (m) return m[1].trim();
  }
  return path.basename(file, '.ipynb');
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface ReportEntry {
  name: string;
  title: string;
  page: string;
  seconds: number;
}

export function indexHtml(entries: ReportEntry[], settings: NotebookSettings, generatedAt: Date): string {
  const rows = entries
    .map(
      (e) =>
        `<li><a href="${encodeURI(e.page)}">${escapeHtml(e.title)}</a> <span class="meta">(${escapeHtml(e.name)}, executed in ${e.seconds.toFixed(0)} s)</span></li>`,
    )
    .join('\n');
  const settingRows = Object.entries(settings)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td><code>${escapeHtml(String(v))}</code></td></tr>`)
    .join('');
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Pneumonia detection in chest X-rays: report</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
li{margin:.4rem 0}.meta{color:#666;font-size:.9em}table{border-collapse:collapse}th,td{text-align:left;padding:2px 12px 2px 0}</style>
</head><body>
<h1>Pneumonia detection in chest X-rays</h1>
<p>Each notebook below was executed headless with <code>jupyter nbconvert --execute</code> on ${escapeHtml(generatedAt.toISOString())}.
The pages open offline: charts are interactive Plotly figures (zoom, hover) drawn by the bundled <code>${PLOTLY_FILE}</code>.</p>
<h2>Contents</h2>
<ol>
${rows}
</ol>
<h2>Settings</h2>
<table>${settingRows || '<tr><td>notebook defaults</td></tr>'}</table>
</body></html>
`;
}

export interface ReportOptions {
  settings: NotebookSettings;
  outDir?: string;
  notebooks?: string[];
  /** Re-execute only notebooks whose names start with these (e.g. ['05']), keeping the report's other pages. */
  only?: string[];
  cellTimeoutS?: number;
  onStart?: (name: string, index: number, total: number) => void;
  onDone?: (entry: ReportEntry, index: number, total: number) => void;
}

export interface ReportResult {
  outDir: string;
  index: string;
  entries: ReportEntry[];
  bytes: number;
  seconds: number;
}

function folderBytes(dir: string): number {
  return fs.readdirSync(dir, { withFileTypes: true }).reduce((sum, e) => {
    const p = path.join(dir, e.name);
    return sum + (e.isDirectory() ? folderBytes(p) : fs.statSync(p).size);
  }, 0);
}

export const MANIFEST_FILE = 'report.json';

interface Manifest {
  settings: NotebookSettings;
  entries: ReportEntry[];
}

/** Keeps the notebooks whose file name starts with one of `prefixes` (e.g. '05' or '05-evaluate'). */
export function selectNotebooks(notebooks: string[], prefixes: string[]): string[] {
  const chosen = notebooks.filter((f) => prefixes.some((p) => path.basename(f).startsWith(p)));
  const unmatched = prefixes.filter((p) => !notebooks.some((f) => path.basename(f).startsWith(p)));
  if (unmatched.length) {
    throw new Error(`No notebook matches ${unmatched.map((u) => `'${u}'`).join(', ')}; notebooks: ${notebooks.map((f) => path.basename(f, '.ipynb')).join(', ')}.`);
  }
  return chosen;
}

/**
 * Executes the notebooks in order and writes the report folder; stops at the first failing notebook.
 * With `only`, re-executes just those notebooks (they reuse the earlier notebooks' saved outputs, e.g. 05 evaluates the
 * run 04 saved) and keeps the other pages of the existing report.
 */
export async function buildReport(opts: ReportOptions): Promise<ReportResult> {
  assertNbconvert();
  registerKernel();
  const outDir = path.resolve(opts.outDir ?? DEFAULT_REPORT_DIR);
  const all = opts.notebooks ?? listNotebooks();
  if (all.length === 0) throw new Error(`No numbered notebooks (NN-name.ipynb) found in ${NOTEBOOKS_DIR}.`);
  const notebooks = opts.only?.length ? selectNotebooks(all, opts.only) : all;
  const manifestFile = path.join(outDir, MANIFEST_FILE);
  let kept: ReportEntry[] = [];
  let settings = opts.settings;
  if (opts.only?.length) {
    if (!fs.existsSync(manifestFile)) throw new Error(`--only needs an existing report in ${outDir}; run the full report first.`);
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as Manifest;
    const redo = new Set(notebooks.map((f) => path.basename(f, '.ipynb')));
    kept = manifest.entries.filter((e) => !redo.has(e.name));
    // The re-run notebooks must see the same data and work folder as the rest of the report, unless overridden.
    const overrides = Object.fromEntries(Object.entries(opts.settings).filter(([, v]) => v !== undefined));
    settings = { ...manifest.settings, ...overrides };
  } else {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  fs.mkdirSync(outDir, { recursive: true });
  const env = notebookEnv(settings);
  const started = Date.now();
  const entries: ReportEntry[] = [];
  for (const [i, file] of notebooks.entries()) {
    const name = path.basename(file, '.ipynb');
    opts.onStart?.(name, i, notebooks.length);
    const run = await executeNotebook(file, { outDir, env, cellTimeoutS: opts.cellTimeoutS });
    const { html, bundle } = externalizePlotly(fs.readFileSync(run.output, 'utf8'));
    if (bundle !== undefined) fs.writeFileSync(path.join(outDir, PLOTLY_FILE), bundle);
    fs.writeFileSync(run.output, dropLocalScriptRefs(html));
    const entry = { name, title: notebookTitle(file), page: path.basename(run.output), seconds: run.seconds };
    entries.push(entry);
    opts.onDone?.(entry, i, notebooks.length);
  }
  const allEntries = [...kept, ...entries].sort((a, b) => a.name.localeCompare(b.name));
  fs.writeFileSync(manifestFile, JSON.stringify({ settings, entries: allEntries } satisfies Manifest, null, 1));
  const index = path.join(outDir, 'index.html');
  fs.writeFileSync(index, indexHtml(allEntries, settings, new Date()));
  return { outDir, index, entries: allEntries, bytes: folderBytes(outDir), seconds: (Date.now() - started) / 1000 };
}

export interface PageShot {
  name: string;
  file: string;
  /** Figure containers on the page, and how many of them drew data traces. */
  figures: number;
  drawn: number;
  images: number;
  errors: string[];
}

const CHROMIUM_PATHS = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];

/**
 * Opens each report page offline in headless Chromium (Debian's `chromium`, driven by playwright-core), waits for
 * every chart to draw, and saves a full-page screenshot: a quick visual check of a report, and proof it renders.
 */
export async function screenshotReport(report: { outDir: string; entries: ReportEntry[] }, shotsDir: string): Promise<PageShot[]> {
  const executablePath = [process.env.PNEUMO_CHROMIUM, ...CHROMIUM_PATHS].find((p): p is string => !!p && fs.existsSync(p));
  if (!executablePath) throw new Error(`No Chromium found (tried ${CHROMIUM_PATHS.join(', ')}; or set PNEUMO_CHROMIUM). Install it: sudo apt-get install chromium`);
  let playwright: typeof import('playwright-core');
  try {
    playwright = await import('playwright-core');
  } catch {
    throw new Error('playwright-core is not installed (it is a dev dependency): run `npm install` without --omit=dev.');
  }
  fs.mkdirSync(shotsDir, { recursive: true });
  const browser = await playwright.chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const shots: PageShot[] = [];
  try {
    for (const entry of report.entries) {
      const context = await browser.newContext({ offline: true, viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(path.join(report.outDir, entry.page)).href);
      const count = () =>
        page.evaluate(() => ({
          figures: document.querySelectorAll('div.pneumo-figure').length,
          drawn: Array.from(document.querySelectorAll('div.pneumo-figure')).filter((d) => d.querySelector('.main-svg g.trace, .main-svg g.hm')).length,
          images: document.querySelectorAll('.pneumo-images img').length,
        }));
      let seen = await count();
      for (let waited = 0; seen.drawn < seen.figures && waited < 60_000; waited += 250) {
        await page.waitForTimeout(250);
        seen = await count();
      }
      const file = path.join(shotsDir, `${entry.name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push({ name: entry.name, file, ...seen, errors });
      await context.close();
    }
  } finally {
    await browser.close();
  }
  return shots;
}
