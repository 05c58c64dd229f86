/** Headless Chromium for the browser tests: Debian's chromium driven by playwright-core (no browser download). */
import * as fs from 'fs';
import * as path from 'path';
import type { Page } from 'playwright-core';

export { CHROMIUM_CANDIDATES, chromiumPath, launchChromium } from '../src/report/chromium';

/** A console error the page itself logs whatever our outputs do, with the reason it is not ours. */
export interface PageNoise {
  why: string;
  /** `text` is the console message, `url` the resource or script it names (playwright's `location().url`). */
  matches(text: string, url: string): boolean;
}

/**
 * Debian's jupyter-notebook (6.x) `main.js` always loads the widgets extension
 * `nbextensions/widgets/notebook/js/extension.js`; without ipywidgets installed (a real user's Jupyter often has
 * none, and `.ci/run` installs none) the server answers 404 with an HTML page, which Chromium logs twice: the
 * failed load and the refused script. Nothing of ours is involved; any other failed load still fails the tests.
 */
export const CLASSIC_NOTEBOOK_NOISE: PageNoise = {
  why: "the classic notebook's hard-coded load of the (absent) widgets nbextension",
  matches: (text, url) => /\/nbextensions\/widgets\/notebook\/js\/extension\.js/.test(`${url} ${text}`),
};

/**
 * JupyterLab's own page noise. Empty: with the debugger extension disabled and news/update checks off in the test's
 * own config (tests/browser-notebook.test.ts), JupyterLab 4.6.4 logged no console error of its own in our runs, so
 * every error fails the test. An entry added here needs the reason it is not ours.
 */
export const JUPYTERLAB_NOISE: readonly PageNoise[] = [];

export interface WatchedErrors {
  /** Errors that fail a test: everything not matched by a PageNoise. */
  errors: string[];
  /** Page noise seen and set aside, with its reason, for the test log. */
  ignored: string[];
}

/** Collects console errors and uncaught page errors, setting aside the given page noise. */
export function watchPageErrors(page: Page, noise: readonly PageNoise[] = []): WatchedErrors {
  const watched: WatchedErrors = { errors: [], ignored: [] };
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const url = m.location().url ?? '';
    const known = noise.find((n) => n.matches(m.text(), url));
    // A failed load's text does not name the resource; its location does.
    const line = `console: ${m.text()}${url ? ` [at ${url}]` : ''}`;
    if (known) watched.ignored.push(`${line} (${known.why})`);
    else watched.errors.push(line);
  });
  page.on('pageerror', (e) => watched.errors.push(`pageerror: ${e.message}`));
  return watched;
}

/** Collects console errors and uncaught page errors. */
export function watchErrors(page: Page): string[] {
  return watchPageErrors(page).errors;
}

export interface ChartCheck {
  charts: number;
  /** Charts whose SVG has no drawn data (no trace group, heatmap image or path). */
  empty: number;
  traces: number[];
}

/**
 * Counts Plotly charts and, per chart, the drawn data traces: `g.trace` (scatter/bar), plus heatmaps (`g.hm`), since
 * heatmaps draw an image rather than a trace group.
 */
export async function checkCharts(page: Page, root = 'body'): Promise<ChartCheck> {
  return page.evaluate((rootSelector) => {
    const plots = [...document.querySelectorAll(`${rootSelector} .js-plotly-plot`)];
    const traces = plots.map((p) => p.querySelectorAll('.main-svg g.trace, .main-svg g.hm').length);
    const empty = plots.filter((p, i) => {
      const svg = p.querySelector('svg.main-svg');
      return !svg || svg.getBoundingClientRect().width === 0 || traces[i] === 0;
    }).length;
    return { charts: plots.length, empty, traces };
  }, root);
}

/** Waits until `expected` charts have data traces (rendering 10 MB of plotly.js takes a moment). */
export async function waitForCharts(page: Page, expected: number, timeoutMs = 60_000, root = 'body'): Promise<ChartCheck> {
  const deadline = Date.now() + timeoutMs;
  let last: ChartCheck = { charts: 0, empty: 0, traces: [] };
  while (Date.now() < deadline) {
    last = await checkCharts(page, root);
    if (last.charts >= expected && last.empty === 0) return last;
    await page.waitForTimeout(250);
  }
  return last;
}

export function screenshotDir(repoRoot: string): string {
  const dir = path.join(repoRoot, 'outputs', 'screenshots');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
