import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { chromiumPath, launchChromium, screenshotDir, waitForCharts, watchErrors } from './browser-helpers';
import { buildReport, screenshotReport } from '../src/report';
import { demoReport, jupyterRequired, jupyterUnavailable, repoRoot, type DemoReport } from './report-fixture';

const unavailable = jupyterUnavailable() ?? (chromiumPath() ? null : 'chromium is not installed (apt-get install chromium)');
const skip = unavailable !== null && !jupyterRequired();

describe.skipIf(skip)(`the exported report in headless Chromium${skip ? ` — SKIPPED: ${unavailable}` : ''}`, () => {
  let browser: Browser;
  let report: DemoReport;

  beforeAll(async () => {
    if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
    report = await demoReport();
    browser = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  /**
   * A page that can only read files: every http(s) request is recorded and refused, so the tests show that the
   * report loads nothing from the network (not merely that a CDN happened to be unreachable).
   */
  async function offlinePage(): Promise<{ context: BrowserContext; page: Page; network: string[] }> {
    const context = await browser.newContext({ offline: true, viewport: { width: 1280, height: 900 } });
    const network: string[] = [];
    await context.route('**', (route) => {
      const url = route.request().url();
      if (/^(https?|wss?):/i.test(url)) {
        network.push(url);
        return route.abort();
      }
      return route.continue();
    });
    return { context, page: await context.newPage(), network };
  }

  it('the summary page shows the data, split, hyperparameters and val/test metrics with the threshold rule, and links every notebook page', async () => {
    fs.mkdirSync(path.join(screenshotDir(repoRoot), 'test-report'), { recursive: true });
    const { context, page, network } = await offlinePage();
    const errors = watchErrors(page);
    await page.goto(pathToFileURL(report.index).href);
    const links = await page.locator('#notebooks ol a').evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).getAttribute('href')!));
    expect(links).toEqual(report.entries.map((e) => e.page));
    for (const link of links) expect(fs.existsSync(path.join(report.outDir, decodeURI(link)))).toBe(true);
    // The split table counts every image of the tiny demo set (12 + 4 per class) once, in train, val or test.
    const splitRows = await page
      .locator('#data table tbody tr')
      .evaluateAll((trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent!.trim())));
    expect(splitRows.map((r) => r[0])).toEqual(['train', 'val', 'test']);
    expect(splitRows.reduce((sum, r) => sum + Number(r[3]), 0)).toBe(32);
    expect(await page.locator('#hyperparameters').textContent()).toMatch(
      /small CNN, 32×32[\s\S]*batch size16[\s\S]*Adam, learning rate 0\.001/,
    );
    const metricRows = await page
      .locator('#metrics table tbody tr')
      .evaluateAll((trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent!.trim())));
    expect(metricRows.map((r) => r[0])).toEqual(['validation', 'test']);
    for (const row of metricRows) for (const cell of row.slice(1)) expect(cell, `metrics row ${row[0]}`).toMatch(/^\d+(\.\d+)?$/);
    expect(await page.locator('#metrics .rule').textContent()).toMatch(
      /Threshold \d\.\d{4}: Youden's J .*\(youden\), chosen on the validation splits together and applied unchanged to test/,
    );
    // The notebook asks for recall=0.98; the tiny validation split cannot judge it, and the page says so.
    expect(await page.locator('#metrics .rule-note').textContent()).toMatch(/recall=0.98 needs at least 50 validation positives/);
    expect(await page.locator('#runs-comparison').count()).toBe(1);
    await page.screenshot({ path: path.join(screenshotDir(repoRoot), 'test-report', 'index.png'), fullPage: true });
    expect(errors).toEqual([]);
    expect(network, 'requests that left file://').toEqual([]);
    await context.close();
  });

  it('no code line overflows its cell: long lines wrap, and there are long lines to wrap', async () => {
    for (const entry of report.entries) {
      const { context, page } = await offlinePage();
      await page.goto(pathToFileURL(path.join(report.outDir, entry.page)).href, { waitUntil: 'load' });
      const cells = await page.evaluate(() =>
        [...document.querySelectorAll('.jp-InputArea-editor, div.input_area')].map((cell) => {
          const pre = cell.querySelector('pre');
          const longest = Math.max(0, ...(pre?.textContent ?? '').split('\n').map((l) => l.length));
          return {
            overflow: cell.scrollWidth - cell.clientWidth,
            preOverflow: pre ? pre.scrollWidth - pre.clientWidth : 0,
            longest,
            width: cell.clientWidth,
          };
        }),
      );
      expect(cells.length, `${entry.name}: code cells on the page`).toBeGreaterThan(0);
      const overflowing = cells.filter((c) => c.overflow > 1 || c.preOverflow > 1);
      expect(overflowing, `${entry.name}: code cells wider than their box`).toEqual([]);
      // No prompts in a report.
      expect(
        await page
          .locator('.jp-InputPrompt, .prompt')
          .filter({ hasText: /\[\d*\]/ })
          .count(),
        `${entry.name}: In [ ]: prompts`,
      ).toBe(0);
      if (entry.name === '05-evaluate') {
        // 05 has code lines far wider than a 1280-px page at 13-px monospace, so this check did see wrapping.
        expect(Math.max(...cells.map((c) => c.longest))).toBeGreaterThan(180);
      }
      await context.close();
    }
  });

  it(
    '--no-input hides the code and keeps the outputs',
    async () => {
      // A copy, so the other tests keep reading the report with code.
      const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'report-no-input-'));
      fs.cpSync(report.outDir, copy, { recursive: true });
      await buildReport({ settings: {}, outDir: copy, only: ['05'], noInput: true, cellTimeoutS: 300 });
      const shots = path.join(screenshotDir(repoRoot), 'test-report');
      for (const [dir, file, code] of [
        [report.outDir, '05-evaluate.png', true],
        [copy, '05-evaluate-no-input.png', false],
      ] as const) {
        const { context, page, network } = await offlinePage();
        const errors = watchErrors(page);
        await page.goto(pathToFileURL(path.join(dir, '05-evaluate.html')).href, { waitUntil: 'load' });
        const charts = await waitForCharts(page, 5);
        expect(charts.charts).toBe(5);
        expect(charts.empty).toBe(0);
        const editors = await page.locator('.jp-InputArea-editor, div.input_area').count();
        if (code) expect(editors).toBeGreaterThan(0);
        else expect(editors).toBe(0);
        await page.screenshot({ path: path.join(shots, file), fullPage: true });
        expect(errors).toEqual([]);
        expect(network).toEqual([]);
        await context.close();
      }
      fs.rmSync(copy, { recursive: true, force: true });
    },
    3 * 60_000,
  );

  it(
    'every chart on every page renders with data traces, every image loads, no console errors, offline',
    async () => {
      const summary: string[] = [];
      for (const entry of report.entries) {
        const { context, page, network } = await offlinePage();
        const errors = watchErrors(page);
        // Anything outside the report folder (a CDN, a file:// path on the exporting machine) counts as a failure.
        const outside: string[] = [];
        page.on('request', (r) => {
          const url = r.url();
          if (!url.startsWith('data:') && !url.startsWith(pathToFileURL(report.outDir).href)) outside.push(url);
        });
        await page.goto(pathToFileURL(path.join(report.outDir, entry.page)).href, { waitUntil: 'load' });
        const expected = await page.locator('div.pneumo-figure').count();
        const charts = await waitForCharts(page, expected);
        const images = await page
          .locator('.pneumo-images img')
          .evaluateAll((imgs) => imgs.map((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0));
        summary.push(`${entry.name}: ${charts.charts} charts (traces ${charts.traces.join('/')}), ${images.length} images`);

        expect(charts.charts, `${entry.name}: charts drawn vs figure containers`).toBe(expected);
        expect(charts.empty, `${entry.name}: charts without data traces`).toBe(0);
        expect(images.every(Boolean), `${entry.name}: an image failed to load`).toBe(true);
        expect(errors, `${entry.name}: console errors`).toEqual([]);
        expect(outside, `${entry.name}: requests outside the report folder`).toEqual([]);
        expect(network, `${entry.name}: requests that left file://`).toEqual([]);
        await context.close();
      }
      console.log(summary.join('\n'));
      // The notebooks that must show charts do (a regression that drops every figure would otherwise pass).
      const byName = Object.fromEntries(summary.map((s) => [s.split(':')[0], s]));
      expect(byName['01-explore']).toMatch(/: [2-9] charts/);
      expect(byName['05-evaluate']).toMatch(/: [5-9] charts/);
      expect(byName['05-evaluate']).not.toMatch(/, 0 images/);
    },
    5 * 60_000,
  );

  it(
    'npm run report --screenshots: one screenshot per page, every chart drawn',
    async () => {
      const shots = await screenshotReport(report, path.join(screenshotDir(repoRoot), 'test-report'));
      expect(shots.map((s) => s.name)).toEqual(report.entries.map((e) => e.name));
      for (const shot of shots) {
        expect(fs.statSync(shot.file).size, shot.name).toBeGreaterThan(10_000);
        expect(shot.drawn, `${shot.name}: charts drawn`).toBe(shot.figures);
        expect(shot.errors, shot.name).toEqual([]);
      }
    },
    3 * 60_000,
  );

  it('charts are interactive: hovering a bar shows its value', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(pathToFileURL(path.join(report.outDir, '01-explore.html')).href);
    await waitForCharts(page, 1);
    const bar = page.locator('.js-plotly-plot .main-svg g.trace.bars path').first();
    await bar.scrollIntoViewIfNeeded();
    // Plotly's drag layer sits above the bars and handles hover, so move the mouse to the bar's centre through it.
    await bar.hover({ force: true });
    await expect.poll(() => page.locator('.js-plotly-plot .hoverlayer .hovertext').count(), { timeout: 10_000 }).toBeGreaterThan(0);
    await page.close();
  });
});
