/**
 * Rich output for tslab notebooks: Plotly figures, image grids and tables as HTML display data.
 *
 * Plotly: the plotly.js bundle (from the plotly.js-dist package, never a CDN) is embedded in the first figure
 * output of each kernel process only. Each figure's own script waits for `window.Plotly`, so the same HTML works
 * in the live notebook page (where scripts in display data run) and in nbconvert's exported HTML (where the outputs
 * are inlined in document order). After a kernel restart the module state is gone, so the next figure embeds the
 * bundle again; `resetPlotlyInclusion()` forces that by hand (e.g. after clearing all outputs).
 */
import * as fs from 'fs';
import type { Figure } from './figures';

/** Anything that can show HTML: tslab's `display`, or a test double. */
export interface HtmlSink {
  html(s: string): void;
}

/** Marks the embedded bundle, so the report can swap it for one shared file. */
export const PLOTLY_SCRIPT_ID = 'pneumo-plotly-bundle';

// Kept on globalThis rather than in module scope: the flag must be per kernel process, even if this module
// is loaded twice (dist/ rebuilt, or reached through two paths).
const STATE_KEY = Symbol.for('pneumo.viz.display.state');
interface DisplayState {
  plotlyIncluded: boolean;
  figureCount: number;
}
function state(): DisplayState {
  const g = globalThis as unknown as Record<symbol, DisplayState | undefined>;
  return (g[STATE_KEY] ??= { plotlyIncluded: false, figureCount: 0 });
}

/** Forgets that plotly.js was sent, so the next figure embeds it again. */
export function resetPlotlyInclusion(): void {
  state().plotlyIncluded = false;
}

let bundleCache: string | undefined;
/** The plotly.js-dist bundle source. */
export function plotlyBundleSource(): string {
  if (bundleCache === undefined) {
    const file = require.resolve('plotly.js-dist');
    // "</script" inside the bundle would end the inline script early.
    bundleCache = fs.readFileSync(file, 'utf8').replace(/<\/script/gi, '<\\/script');
  }
  return bundleCache;
}

/**
 * `<script>` tag carrying plotly.js. Guarded so a page that already has Plotly does not re-evaluate 10 MB of JS;
 * `define`/`module`/`exports` are shadowed because the classic notebook page has require.js, and plotly's UMD
 * wrapper would register an anonymous AMD module instead of setting `window.Plotly`.
 */
export function plotlyBundleTag(): string {
  return (
    `<script id="${PLOTLY_SCRIPT_ID}" type="text/javascript">(function () {\n` +
    `if (window.Plotly) return;\nvar define = undefined, module = undefined, exports = undefined;\n` +
    `${plotlyBundleSource()}\n})();</script>`
  );
}

/** JSON for embedding inside a <script>: `</` would close the script element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

export interface FigureHtmlOptions {
  /** Include the plotly.js bundle before the figure. */
  includePlotly: boolean;
  /** DOM id of the chart container. */
  id: string;
}

/**
 * HTML for one figure: a container div and a script that draws it once Plotly is available. If plotly.js never
 * arrives (its output was cleared and the page reloaded), the div says how to fix it instead of staying blank.
 */
export function figureHtml(fig: Figure, opts: FigureHtmlOptions): string {
  const height = fig.layout.height ?? 450;
  const config = { responsive: true, displaylogo: false };
  const draw = `(function () {
  var id = ${scriptJson(opts.id)}, fig = ${scriptJson(fig)}, config = ${scriptJson(config)}, tries = 0;
  function draw() {
    var el = document.getElementById(id);
    if (!el) return;
    if (window.Plotly) { window.Plotly.newPlot(el, fig.data, fig.layout, config); return; }
    if (++tries > 200) { el.textContent = 'plotly.js is not loaded in this page: run resetPlotlyInclusion() and re-run this cell.'; return; }
    setTimeout(draw, 50);
  }
  draw();
})();`;
  return (
    (opts.includePlotly ? plotlyBundleTag() : '') +
    `<div id="${opts.id}" class="pneumo-figure" style="width:100%;min-height:${height}px"></div>` +
    `<script type="text/javascript">${draw}</script>`
  );
}

function tslabDisplay(): HtmlSink {
  // Required lazily: tslab only works inside its kernel, and figures.ts users outside a notebook never load it.
  return require('tslab').display as HtmlSink;
}

/** Shows a Plotly figure in the current notebook cell. */
export function showFigure(fig: Figure, sink: HtmlSink = tslabDisplay()): void {
  const s = state();
  const id = `pneumo-fig-${process.pid}-${Date.now().toString(36)}-${s.figureCount++}`;
  sink.html(figureHtml(fig, { includePlotly: !s.plotlyIncluded, id }));
  s.plotlyIncluded = true;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface ImageItem {
  png: Buffer | Uint8Array;
  caption: string;
}

/** HTML for a grid of inline PNGs (base64 data URIs, so exports stay self-contained). */
export function imagesHtml(items: ImageItem[], columns = 4, pixelWidth = 160): string {
  const cells = items
    .map((item) => {
      const b64 = Buffer.from(item.png).toString('base64');
      return (
        `<figure style="margin:0;text-align:center">` +
        `<img src="data:image/png;base64,${b64}" style="width:${pixelWidth}px;image-rendering:pixelated" alt="${escapeHtml(item.caption)}">` +
        `<figcaption style="font-size:12px;line-height:1.2">${escapeHtml(item.caption)}</figcaption></figure>`
      );
    })
    .join('');
  return `<div class="pneumo-images" style="display:grid;grid-template-columns:repeat(${columns}, ${pixelWidth}px);gap:8px">${cells}</div>`;
}

/** Shows images in a grid with captions. */
export function showImages(items: ImageItem[], columns = 4, sink: HtmlSink = tslabDisplay(), pixelWidth = 160): void {
  sink.html(imagesHtml(items, columns, pixelWidth));
}

/** The parts of a danfo DataFrame a table needs (so tests and callers need not load danfo). */
export interface TableLike {
  columns: string[];
  values: unknown[][] | unknown[];
  index: (string | number)[];
}

export type Row = Record<string, unknown>;

function isTableLike(x: unknown): x is TableLike {
  return (
    typeof x === 'object' && x !== null && Array.isArray((x as TableLike).columns) && 'values' in x && Array.isArray((x as TableLike).index)
  );
}

function formatCell(v: unknown): string {
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 1000 || Math.abs(v) < 0.001 ? v.toPrecision(4) : v.toFixed(4).replace(/0+$/, '').replace(/\.$/, '');
  }
  if (v === null || v === undefined) return '–';
  return String(v);
}

/** HTML table from row objects or a danfo DataFrame; the DataFrame's index becomes the first column. */
export function tableHtml(table: Row[] | TableLike, caption?: string): string {
  let columns: string[];
  let rows: unknown[][];
  let index: (string | number)[] | undefined;
  if (isTableLike(table)) {
    columns = table.columns;
    const values = table.values as unknown[];
    // A one-column DataFrame's values can come back flat.
    rows = values.map((r) => (Array.isArray(r) ? r : [r]));
    const defaultIndex = table.index.every((v, i) => v === i);
    index = defaultIndex ? undefined : table.index;
  } else {
    columns = [...new Set(table.flatMap((r) => Object.keys(r)))];
    rows = table.map((r) => columns.map((c) => r[c]));
  }
  const th = (s: string) => `<th style="text-align:right;padding:2px 10px">${escapeHtml(s)}</th>`;
  const td = (v: unknown) => `<td style="text-align:right;padding:2px 10px">${escapeHtml(formatCell(v))}</td>`;
  const head = `<tr>${index ? th('') : ''}${columns.map(th).join('')}</tr>`;
  const body = rows.map((r, i) => `<tr>${index ? th(String(index[i])) : ''}${r.map(td).join('')}</tr>`).join('');
  const cap = caption ? `<caption style="caption-side:top;text-align:left;font-weight:bold">${escapeHtml(caption)}</caption>` : '';
  return `<table class="pneumo-table dataframe" style="border-collapse:collapse">${cap}<thead>${head}</thead><tbody>${body}</tbody></table>`;
}

/** Shows rows or a danfo DataFrame as an HTML table. */
export function showTable(table: Row[] | TableLike, caption?: string, sink: HtmlSink = tslabDisplay()): void {
  sink.html(tableHtml(table, caption));
}
