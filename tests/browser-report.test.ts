import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { chromiumPath, launchChromium, screenshotDir, waitForCharts, watchErrors } from './browser-helpers';
import { screenshotReport } from '../src/report';
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

  it('the index links every notebook page and the links resolve', async () => {
    fs.mkdirSync(path.join(screenshotDir(repoRoot), 'test-report'), { recursive: true });
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(pathToFileURL(report.index).href);
    const links = await page.locator('ol a').evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).getAttribute('href')!));
    expect(links).toEqual(report.entries.map((e) => e.page));
    for (const link of links) expect(fs.existsSync(path.join(report.outDir, decodeURI(link)))).toBe(true);
    await page.screenshot({ path: path.join(screenshotDir(repoRoot), 'test-report', 'index.png') });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('every chart on every page renders with data traces, every image loads, no console errors, offline', async () => {
    const summary: string[] = [];
    for (const entry of report.entries) {
      const context = await browser.newContext({ offline: true, viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
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
      const images = await page.locator('.pneumo-images img').evaluateAll((imgs) =>
        imgs.map((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0),
      );
      summary.push(`${entry.name}: ${charts.charts} charts (traces ${charts.traces.join('/')}), ${images.length} images`);

      expect(charts.charts, `${entry.name}: charts drawn vs figure containers`).toBe(expected);
      expect(charts.empty, `${entry.name}: charts without data traces`).toBe(0);
      expect(images.every(Boolean), `${entry.name}: an image failed to load`).toBe(true);
      expect(errors, `${entry.name}: console errors`).toEqual([]);
      expect(outside, `${entry.name}: requests outside the report folder`).toEqual([]);
      await context.close();
    }
    console.log(summary.join('\n'));
    // The notebooks that must show charts do (a regression that drops every figure would otherwise pass).
    const byName = Object.fromEntries(summary.map((s) => [s.split(':')[0], s]));
    expect(byName['01-explore']).toMatch(/: [2-9] charts/);
    expect(byName['05-evaluate']).toMatch(/: [5-9] charts/);
    expect(byName['05-evaluate']).not.toMatch(/, 0 images/);
  }, 5 * 60_000);

  it('npm run report --screenshots: one screenshot per page, every chart drawn', async () => {
    const shots = await screenshotReport(report, path.join(screenshotDir(repoRoot), 'test-report'));
    expect(shots.map((s) => s.name)).toEqual(report.entries.map((e) => e.name));
    for (const shot of shots) {
      expect(fs.statSync(shot.file).size, shot.name).toBeGreaterThan(10_000);
      expect(shot.drawn, `${shot.name}: charts drawn`).toBe(shot.figures);
      expect(shot.errors, shot.name).toEqual([]);
    }
  }, 3 * 60_000);

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
