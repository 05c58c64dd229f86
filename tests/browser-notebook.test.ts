/**
 * Drives the live notebook UI the way a user does: start the classic Jupyter notebook server (Debian's
 * jupyter-notebook; JupyterLab is not packaged), open 04-train and then 05-evaluate, choose Cell > Run All, wait, and
 * check that the charts, the live training display and the Grad-CAM images render in the page itself.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { hasJupyterCommand } from '../src/jupyter';
import { CLASSIC_NOTEBOOK_NOISE, chromiumPath, launchChromium, screenshotDir, waitForCharts, watchPageErrors, type WatchedErrors } from './browser-helpers';
import { demoReport, jupyterRequired, jupyterUnavailable, repoRoot, tinySettings } from './report-fixture';
import { notebookEnv } from '../src/report';

const unavailable =
  jupyterUnavailable() ??
  (hasJupyterCommand('notebook') ? null : 'the classic notebook is not installed (apt-get install jupyter-notebook)') ??
  (chromiumPath() ? null : 'chromium is not installed (apt-get install chromium)');
const skip = unavailable !== null && !jupyterRequired();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForServer(url: string, server: ChildProcess, log: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.exitCode !== null) throw new Error(`jupyter notebook exited (${server.exitCode}):\n${log()}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`jupyter notebook did not answer at ${url} within ${timeoutMs / 1000} s:\n${log()}`);
}

/**
 * Classic notebook: Run All is finished when the kernel is idle, no code cell is queued or running (prompt '*'), and
 * either every code cell has an execution number or a cell failed (the rest of the queue is then dropped).
 */
async function waitForRunAll(page: Page, timeoutMs: number): Promise<void> {
  await page.waitForFunction(
    () => {
      type Cell = { cell_type: string; input_prompt_number?: unknown };
      const nb = (window as unknown as { Jupyter: { notebook: { get_cells(): Cell[] } } }).Jupyter.notebook;
      const prompts = nb.get_cells().filter((c) => c.cell_type === 'code').map((c) => c.input_prompt_number);
      const idle = document.querySelector('#kernel_indicator_icon')?.classList.contains('kernel_idle_icon');
      const failed = document.querySelector('#notebook .output_error') !== null;
      return idle && !prompts.includes('*') && (failed || prompts.every((p) => typeof p === 'number'));
    },
    undefined,
    { timeout: timeoutMs, polling: 500 },
  );
}

describe.skipIf(skip)(`the live notebook UI${skip ? ` — SKIPPED: ${unavailable}` : ''}`, () => {
  const token = crypto.randomBytes(12).toString('hex');
  let tmp: string;
  let server: ChildProcess;
  let serverLog = '';
  let base: string;
  let browser: Browser;

  beforeAll(async () => {
    if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
    // The split and decode cache of the shared tiny demo run; this test trains into its own run folder.
    const report = await demoReport();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-live-'));
    const nbDir = path.join(tmp, 'notebooks');
    fs.mkdirSync(nbDir);
    for (const nb of ['04-train.ipynb', '05-evaluate.ipynb']) fs.copyFileSync(path.join(repoRoot, 'notebooks', nb), path.join(nbDir, nb));
    // Cells import '../dist/...' and tslab looks for node_modules above the notebook: link both.
    fs.symlinkSync(path.join(repoRoot, 'dist'), path.join(tmp, 'dist'));
    fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(tmp, 'node_modules'));

    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    const env = {
      ...process.env,
      ...notebookEnv(tinySettings(report.dataDir, report.workDir)),
      PNEUMO_RUN_DIR: path.join(tmp, 'run'),
      JUPYTER_CONFIG_DIR: path.join(tmp, 'jupyter-config'),
      JUPYTER_RUNTIME_DIR: path.join(tmp, 'jupyter-runtime'),
    };
    server = spawn(
      'jupyter',
      ['notebook', '--no-browser', '--ip=127.0.0.1', `--port=${port}`, '--port-retries=0', `--NotebookApp.token=${token}`, `--notebook-dir=${nbDir}`, ...(process.getuid?.() === 0 ? ['--allow-root'] : [])],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    server.stdout!.on('data', (d: Buffer) => (serverLog += d.toString()));
    server.stderr!.on('data', (d: Buffer) => (serverLog += d.toString()));
    await waitForServer(`${base}/api/status?token=${token}`, server, () => serverLog);
    browser = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    await browser?.close();
    if (server && server.exitCode === null) {
      // Shut the kernels down through the API first, then stop the server we started (by its pid).
      try {
        const sessions = (await (await fetch(`${base}/api/sessions?token=${token}`)).json()) as { id: string }[];
        await Promise.all(sessions.map((s) => fetch(`${base}/api/sessions/${s.id}?token=${token}`, { method: 'DELETE' })));
      } catch {
        // server already gone
      }
      server.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1000));
      if (server.exitCode === null) server.kill('SIGKILL');
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  async function runNotebook(name: string): Promise<{ page: Page; errors: WatchedErrors }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = watchPageErrors(page, [CLASSIC_NOTEBOOK_NOISE]);
    await page.goto(`${base}/notebooks/${name}?token=${token}`);
    // The kernel must be connected before Run All, or the executions are dropped.
    await page.waitForFunction(
      () => {
        const kernel = (window as unknown as { Jupyter?: { notebook?: { kernel?: { is_connected(): boolean } } } }).Jupyter?.notebook?.kernel;
        return Boolean(kernel?.is_connected()) && document.querySelector('#kernel_indicator_icon.kernel_idle_icon') !== null;
      },
      undefined,
      { timeout: 60_000, polling: 250 },
    );
    // Cell > Run All, through the menu bar like a user.
    await page.click('#menus a.dropdown-toggle:text-is("Cell")');
    await page.click('#run_all_cells a');
    await waitForRunAll(page, 5 * 60_000);
    return { page, errors };
  }

  async function assertRendered(page: Page, name: string, errors: WatchedErrors): Promise<{ charts: number; images: number }> {
    const cellErrors = await page.locator('#notebook .output_error').allTextContents();
    expect(cellErrors, `${name}: a cell failed in the live notebook`).toEqual([]);
    const expected = await page.locator('#notebook div.pneumo-figure').count();
    const charts = await waitForCharts(page, expected, 60_000, '#notebook');
    const images = await page
      .locator('#notebook .pneumo-images img')
      .evaluateAll((imgs) => imgs.map((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0));
    // The classic notebook scrolls inside #site; let the page grow so the full-page screenshot shows every cell.
    await page.addStyleTag({ content: '#site { height: auto !important; overflow: visible !important; } body { overflow: visible !important; }' });
    await page.screenshot({ path: path.join(screenshotDir(repoRoot), `live-${name.replace('.ipynb', '')}.png`), fullPage: true });
    expect(charts.charts, `${name}: charts drawn vs figure containers`).toBe(expected);
    expect(charts.empty, `${name}: charts without data traces`).toBe(0);
    expect(images.every(Boolean), `${name}: an image failed to load`).toBe(true);
    // Anything but the notebook page's own known noise came from an output (e.g. plotly failing).
    if (errors.ignored.length) console.log(`${name}: set aside as Jupyter's own page noise:\n  ${errors.ignored.join('\n  ')}`);
    expect(errors.errors, `${name}: console errors`).toEqual([]);
    return { charts: charts.charts, images: images.length };
  }

  it('04-train: Run All trains, shows the live progress table and the loss/accuracy and LR charts', async () => {
    const { page, errors } = await runNotebook('04-train.ipynb');
    const result = await assertRendered(page, '04-train.ipynb', errors);
    expect(result.charts).toBe(2);
    // The live progress display ended as a table with one row per epoch (1 epoch here).
    const progressRows = await page.locator('#notebook .output_html table').first().locator('tr').count();
    expect(progressRows).toBeGreaterThanOrEqual(2);
    expect(fs.existsSync(path.join(tmp, 'run', 'model', 'model.json'))).toBe(true);
    await page.close();
  }, 6 * 60_000);

  it('05-evaluate: Run All on the model 04 just trained shows the confusion matrix, ROC, PR, probability histogram and comparison charts and Grad-CAM images', async () => {
    const { page, errors } = await runNotebook('05-evaluate.ipynb');
    const result = await assertRendered(page, '05-evaluate.ipynb', errors);
    expect(result.charts).toBe(5);
    expect(await page.locator('#notebook .js-plotly-plot .main-svg g.hm').count()).toBe(1); // the confusion heatmap
    const mistakes = await page.locator('#notebook .pneumo-images img').count();
    const noMistakes = await page.locator('#notebook .output_text:has-text("No test mistakes")').count();
    expect(mistakes > 0 || noMistakes > 0).toBe(true);
    await page.close();
  }, 6 * 60_000);
});
