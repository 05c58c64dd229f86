/**
 * The offline HTML report: execute the numbered notebooks headless with nbconvert (in order: later notebooks
 * reuse earlier ones' outputs), export each to HTML, and write an index page linking them.
 *
 * Each exported page would carry its own 10 MB copy of plotly.js; the report keeps one shared `plotly.js` file next
 * to the pages instead, so the folder stays small and still opens offline from disk (file://).
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { APT_HINT, hasJupyterCommand, jupyterExecutable, registerKernel } from '../notebooks/jupyter';
import { repoRoot } from '../paths';
import { notebookPaths, paramEnvName, type NotebookPaths, type Params } from '../notebooks/params';
import { listRuns } from '../runs/read';
import { executeWithParameters } from '../notebooks/exec';
import { launchChromium } from './chromium';
import { readRunSummary, summaryHtml } from './summary';
import { PLOTLY_SCRIPT_ID } from '../viz/display';

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
/** Values injected into each notebook after its parameters cell (see src/notebook-exec.ts). */
export interface NotebookSettings {
  data?: string;
  epochs?: number;
  limit?: number;
  imageSize?: number;
  batchSize?: number;
  learningRate?: number;
  augment?: string;
  seed?: number;
  /** Where the notebooks write split.json, the decode cache and the run directory. */
  out?: string;
  /** Model variant ('seed' or 'small'). */
  model?: string;
}

/** The run the summary describes: the newest one 05-evaluate evaluated (05's default), else the newest trained. */
export function reportedRun(paths: NotebookPaths): string | undefined {
  const { runs } = listRuns(paths.runsDir);
  const pick = (status: string) => runs.filter((r) => r.status === status).at(-1)?.dir;
  return paths.runDir ?? pick('evaluated') ?? pick('trained');
}

/** The settings that are set, as the parameters to inject. */
export function settingsParams(settings: NotebookSettings): Params {
  return Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined && v !== null)) as Params;
}

export function notebookEnv(settings: NotebookSettings): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value !== undefined && value !== null) env[paramEnvName(key)] = String(value);
  }
  return env;
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
 * Moves large inline `<style>` blocks into shared files named by their content hash: nbconvert's lab template inlines
 * the same 240 KB JupyterLab theme into every page, so one copy serves them all. Small page-specific styles stay.
 */
export function externalizeStyles(html: string, minBytes = 8192): { html: string; sheets: { file: string; css: string }[] } {
  const sheets: { file: string; css: string }[] = [];
  const out = html.replace(/<style\b([^>]*)>([\s\S]*?)<\/style>/gi, (tag, attrs: string, css: string) => {
    if (css.length < minBytes || /\bid=/.test(attrs)) return tag;
    const file = `style-${crypto.createHash('sha1').update(css).digest('hex').slice(0, 10)}.css`;
    if (!sheets.some((s) => s.file === file)) sheets.push({ file, css });
    return `<link rel="stylesheet" href="${file}">`;
  });
  return { html: out, sheets };
}

/** An address that leaves the report folder: a URL with a scheme (http:, https:, file:) or protocol-relative. */
function isExternal(url: string): boolean {
  return /^([a-z][a-z0-9+.-]*:|\/\/)/i.test(url.trim()) && !/^data:/i.test(url.trim());
}

/**
 * Makes an exported page load nothing from outside its folder. nbconvert's templates link require.js and MathJax from
 * a CDN (nbconvert 7) or from /usr/share/javascript on the exporting machine (Debian's 6.5), and the lab template
 * imports mermaid.js from a CDN when a page has diagrams. Our outputs need none of them (plotly.js is shared locally,
 * and the notebooks have no LaTeX or mermaid), and the report must open offline with no failed loads.
 */
export function dropExternalRefs(html: string): string {
  return html
    .replace(/<script\b[^>]*\ssrc\s*=\s*["']([^"']*)["'][^>]*>[\s\S]*?<\/script>/gi, (tag, src: string) => (isExternal(src) ? '' : tag))
    .replace(/<link\b[^>]*\shref\s*=\s*["']([^"']*)["'][^>]*>/gi, (tag, href: string) =>
      /stylesheet|preload|modulepreload/i.test(tag) && isExternal(href) ? '' : tag,
    )
    .replace(/<script\b[^>]*>(?:(?!<\/script>)[\s\S])*?import\(\s*["']https?:[\s\S]*?<\/script>/gi, '');
}

/** Kept for callers of the earlier name: the same cleaning, which covers the exporting machine's file:// paths. */
export const dropLocalScriptRefs = dropExternalRefs;

/**
 * Style added to every page: code and text outputs wrap instead of scrolling sideways (a reader should never have to
 * scroll a cell to read its end), and a small bar links back to the summary page.
 */
export const PAGE_STYLE = `<style id="pneumo-report-style">
.jp-InputArea-editor pre, .jp-RenderedText pre, .jp-OutputArea-output pre, div.input_area pre, div.output_text pre, .highlight pre {
  white-space: pre-wrap !important; overflow-wrap: anywhere; word-break: normal; overflow-x: hidden;
}
.jp-InputArea-editor, div.input_area { overflow-x: hidden; }
nav.pneumo-nav { font: 14px system-ui, sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd; background: #fafafa; }
nav.pneumo-nav a { margin-right: 1.2em; }
</style>`;

export interface PageLinks {
  index: string;
  prev?: { page: string; title: string };
  next?: { page: string; title: string };
}

/** Adds the report style and the navigation bar to one exported page. */
export function decoratePage(html: string, links: PageLinks): string {
  const link = (l: { page: string; title: string } | undefined, arrow: string) =>
    l ? `<a href="${encodeURI(l.page)}">${arrow} ${escapeHtml(l.title)}</a>` : '';
  const nav = `<nav class="pneumo-nav"><a href="${encodeURI(links.index)}">Report summary</a>${link(links.prev, '←')}${link(links.next, '→')}</nav>`;
  const withStyle = html.includes('</head>') ? html.replace('</head>', `${PAGE_STYLE}\n</head>`) : PAGE_STYLE + html;
  const bodyOpen = /<body\b[^>]*>/i.exec(withStyle);
  return bodyOpen
    ? withStyle.slice(0, bodyOpen.index + bodyOpen[0].length) + nav + withStyle.slice(bodyOpen.index + bodyOpen[0].length)
    : nav + withStyle;
}

/**
 * The HTML templates the chosen nbconvert has, from `jupyter --paths --json` (each data dir's nbconvert/templates).
 */
export function nbconvertTemplates(): string[] {
  const jupyter = jupyterExecutable();
  if (!jupyter) return [];
  const r = spawnSync(jupyter, ['--paths', '--json'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) return [];
  const dirs = (JSON.parse(r.stdout) as { data: string[] }).data;
  const found = new Set<string>();
  for (const dir of dirs) {
    const t = path.join(dir, 'nbconvert', 'templates');
    if (fs.existsSync(t)) for (const name of fs.readdirSync(t)) if (fs.existsSync(path.join(t, name, 'conf.json'))) found.add(name);
  }
  return [...found];
}

/** nbconvert's modern JupyterLab look when the installed nbconvert has it (6.x and 7.x do), else its classic one. */
export function chooseTemplate(available: string[]): string | null {
  return ['lab', 'classic'].find((t) => available.includes(t)) ?? null;
}

/**
 * Minifies the shared plotly.js with esbuild: plotly.js-dist ships only its unminified build, most of the report's
 * bytes. Returns null when esbuild is not installed (a production install without dev dependencies).
 */
export async function minifyJs(source: string): Promise<string | null> {
  let esbuild: typeof import('esbuild');
  try {
    esbuild = await import('esbuild');
  } catch {
    return null;
  }
  const out = await esbuild.transform(source, { minify: true, loader: 'js', legalComments: 'inline' });
  return out.code;
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

export interface ReportOptions {
  settings: NotebookSettings;
  outDir?: string;
  notebooks?: string[];
  /** Re-execute only notebooks whose names start with these (e.g. ['05']), keeping the report's other pages. */
  only?: string[];
  cellTimeoutS?: number;
  /** Hide code cells on every page (`npm run report -- --no-input`). */
  noInput?: boolean;
  onStart?: (name: string, index: number, total: number) => void;
  onDone?: (entry: ReportEntry, index: number, total: number) => void;
}

export interface ReportResult {
  outDir: string;
  index: string;
  entries: ReportEntry[];
  bytes: number;
  seconds: number;
  /** Bytes of the shared plotly.js, and whether it was minified. */
  plotly?: { bytes: number; sourceBytes: number; minified: boolean };
  template: string | null;
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
  noInput?: boolean;
}

/** Keeps the notebooks whose file name starts with one of `prefixes` (e.g. '05' or '05-evaluate'). */
export function selectNotebooks(notebooks: string[], prefixes: string[]): string[] {
  const chosen = notebooks.filter((f) => prefixes.some((p) => path.basename(f).startsWith(p)));
  const unmatched = prefixes.filter((p) => !notebooks.some((f) => path.basename(f).startsWith(p)));
  if (unmatched.length) {
    throw new Error(
      `No notebook matches ${unmatched.map((u) => `'${u}'`).join(', ')}; notebooks: ${notebooks.map((f) => path.basename(f, '.ipynb')).join(', ')}.`,
    );
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
  let noInput = opts.noInput;
  if (opts.only?.length) {
    if (!fs.existsSync(manifestFile)) throw new Error(`--only needs an existing report in ${outDir}; run the full report first.`);
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as Manifest;
    const redo = new Set(notebooks.map((f) => path.basename(f, '.ipynb')));
    kept = manifest.entries.filter((e) => !redo.has(e.name));
    // The re-run notebooks must see the same data and work folder as the rest of the report, unless overridden.
    const overrides = Object.fromEntries(Object.entries(opts.settings).filter(([, v]) => v !== undefined));
    settings = { ...manifest.settings, ...overrides };
    noInput ??= manifest.noInput;
  } else {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  fs.mkdirSync(outDir, { recursive: true });
  const template = chooseTemplate(nbconvertTemplates());
  const started = Date.now();
  const entries: ReportEntry[] = [];
  let plotly: ReportResult['plotly'];
  for (const [i, file] of notebooks.entries()) {
    const name = path.basename(file, '.ipynb');
    opts.onStart?.(name, i, notebooks.length);
    const run = await executeWithParameters(file, settingsParams(settings), {
      outDir,
      to: 'html',
      cellTimeoutS: opts.cellTimeoutS,
      template,
      noInput,
    });
    const { html, bundle } = externalizePlotly(fs.readFileSync(run.output, 'utf8'));
    if (bundle !== undefined && !plotly) {
      const minified = await minifyJs(bundle);
      fs.writeFileSync(path.join(outDir, PLOTLY_FILE), minified ?? bundle);
      plotly = { bytes: Buffer.byteLength(minified ?? bundle), sourceBytes: Buffer.byteLength(bundle), minified: minified !== null };
    }
    const styled = externalizeStyles(dropExternalRefs(html));
    for (const sheet of styled.sheets) fs.writeFileSync(path.join(outDir, sheet.file), sheet.css);
    fs.writeFileSync(run.output, styled.html);
    const entry = { name, title: notebookTitle(file), page: path.basename(run.output), seconds: run.seconds };
    entries.push(entry);
    opts.onDone?.(entry, i, notebooks.length);
  }
  const allEntries = [...kept, ...entries].sort((a, b) => a.name.localeCompare(b.name));
  // Navigation links need the whole page list, so every page (kept ones too) is decorated once it is known.
  const index = path.join(outDir, 'index.html');
  for (const [i, e] of allEntries.entries()) {
    const file = path.join(outDir, e.page);
    const current = fs.readFileSync(file, 'utf8');
    const bare = current
      .replace(/<nav class="pneumo-nav">[\s\S]*?<\/nav>/, '')
      .replace(/<style id="pneumo-report-style">[\s\S]*?<\/style>\n?/, '');
    const near = (j: number) => (allEntries[j] ? { page: allEntries[j].page, title: allEntries[j].title } : undefined);
    const decorated = decoratePage(bare, { index: 'index.html', prev: near(i - 1), next: near(i + 1) });
    // A kept page (--only) is rewritten only if its links changed, so it stays exactly as it was executed.
    if (decorated !== current) fs.writeFileSync(file, decorated);
  }
  fs.writeFileSync(manifestFile, JSON.stringify({ settings, entries: allEntries, noInput } satisfies Manifest, null, 1));
  const runDir = reportedRun(notebookPaths(settings.out ?? 'outputs/notebooks'));
  const run = runDir ? await readRunSummary(runDir) : null;
  fs.writeFileSync(index, summaryHtml({ pages: allEntries, run, outDir, generatedAt: new Date(), settings: { ...settings }, noInput }));
  return { outDir, index, entries: allEntries, bytes: folderBytes(outDir), seconds: (Date.now() - started) / 1000, plotly, template };
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

/**
 * Opens each report page offline in headless Chromium (Debian's `chromium`, driven by playwright-core), waits for
 * every chart to draw, and saves a full-page screenshot: a quick visual check of a report, and proof it renders.
 */
export async function screenshotReport(report: { outDir: string; entries: ReportEntry[] }, shotsDir: string): Promise<PageShot[]> {
  fs.mkdirSync(shotsDir, { recursive: true });
  const browser = await launchChromium();
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
          drawn: Array.from(document.querySelectorAll('div.pneumo-figure')).filter((d) =>
            d.querySelector('.main-svg g.trace, .main-svg g.hm'),
          ).length,
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
