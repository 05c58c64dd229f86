/** The page-noise filter of the live notebook tests sets aside only Jupyter's known noise, in a real Chromium. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { CLASSIC_NOTEBOOK_NOISE, chromiumPath, launchChromium, watchPageErrors } from './browser-helpers';
import { jupyterRequired } from './report-fixture';

const skip = !chromiumPath() && !jupyterRequired();

describe.skipIf(skip)(`watchPageErrors${skip ? ' — SKIPPED: chromium is not installed (apt-get install chromium)' : ''}`, () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  it("sets aside the widgets nbextension's 404 and keeps every other failed load and console error", async () => {
    const page = await browser.newPage();
    const origin = 'http://notebook.test';
    await page.route(`${origin}/**`, (route) => {
      const url = route.request().url();
      if (url.endsWith('/notebooks/x.ipynb')) {
        return route.fulfill({
          contentType: 'text/html',
          body: `<script src="/nbextensions/widgets/notebook/js/extension.js"></script>
                 <script src="/files/our-output.js"></script>
                 <script>console.error('plotly: cannot draw');</script>`,
        });
      }
      return route.fulfill({ status: 404, contentType: 'text/html', body: '<h1>404</h1>' });
    });
    const watched = watchPageErrors(page, [CLASSIC_NOTEBOOK_NOISE]);
    await page.goto(`${origin}/notebooks/x.ipynb`);
    await page.waitForTimeout(300);
    expect(watched.ignored.length).toBeGreaterThanOrEqual(1);
    expect(watched.ignored.every((e) => e.includes(CLASSIC_NOTEBOOK_NOISE.why))).toBe(true);
    expect(watched.errors.some((e) => e.includes('our-output.js'))).toBe(true);
    expect(watched.errors.some((e) => e.startsWith('console: plotly: cannot draw'))).toBe(true);
    expect(watched.errors.some((e) => e.includes('nbextensions/widgets'))).toBe(false);
    await page.close();
  });
});
