/**
 * Drives the live notebook UI the way a user does: start JupyterLab (from the checkout's .venv-jupyter or wherever
 * src/jupyter.ts finds it) or, where JupyterLab is not installed, the classic notebook (Debian's jupyter-notebook);
 * open 04-train and then 05-evaluate, Run All from the menu, wait, and check that the charts, the live training display
 * and the Grad-CAM images render in the page itself. Which UI ran is in every test's name.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { hasJupyterCommand, jupyterExecutable, jupyterVersion, labInstallHint } from '../src/notebooks/jupyter';
import {
  CLASSIC_NOTEBOOK_NOISE,
  chromiumPath,
  JUPYTERLAB_NOISE,
  launchChromium,
  screenshotDir,
  waitForCharts,
  watchPageErrors,
  type WatchedErrors,
} from './browser-helpers';
import { demoReport, jupyterRequired, jupyterUnavailable, repoRoot, tinySettings } from './report-fixture';
import { notebookEnv } from '../src/report';

/** JupyterLab where the chosen Jupyter has it, else the classic notebook. */
const ui: 'lab' | 'classic' | null = jupyterUnavailable()
  ? null
  : hasJupyterCommand('lab')
    ? 'lab'
    : hasJupyterCommand('notebook')
      ? 'classic'
      : null;
const labVersion = ui === 'lab' ? jupyterVersion('lab') : null;
const unavailable =
  jupyterUnavailable() ??
  (ui ? null : `neither JupyterLab nor the classic notebook is installed (${labInstallHint()}; or apt-get install jupyter-notebook)`) ??
  (process.env.PNEUMO_REQUIRE_JUPYTERLAB === '1' && ui !== 'lab'
    ? `PNEUMO_REQUIRE_JUPYTERLAB=1 but ${jupyterExecutable()} has no JupyterLab`
    : null) ??
  (chromiumPath() ? null : 'chromium is not installed (apt-get install chromium)');
const skip = unavailable !== null && !jupyterRequired();
const uiName = ui === 'lab' ? `JupyterLab ${labVersion}` : `the classic notebook, as ${jupyterExecutable()} has no JupyterLab`;
if (ui === 'classic')
  console.log(
    `live notebook test: JupyterLab is not available, so it runs on the classic notebook. To install JupyterLab:\n  ${labInstallHint()}`,
  );
/** The tslab kernel's display name (tslab's kernel.json), which the toolbar shows once the kernel is chosen. */
const KERNEL_DISPLAY_NAME = 'TypeScript';
/** The live test trains longer than the report's fixture, so the progress display is seen mid-training. */
const LIVE_EPOCHS = 10;
const LIVE_IMAGE_SIZE = 64;

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
      const prompts = nb
        .get_cells()
        .filter((c) => c.cell_type === 'code')
        .map((c) => c.input_prompt_number);
      const idle = document.querySelector('#kernel_indicator_icon')?.classList.contains('kernel_idle_icon');
      const failed = document.querySelector('#notebook .output_error') !== null;
      return idle && !prompts.includes('*') && (failed || prompts.every((p) => typeof p === 'number'));
    },
    undefined,
    { timeout: timeoutMs, polling: 500 },
  );
}

/**
 * JupyterLab: Run All is finished when the kernel is idle, no code cell shows `[*]`, and either every code cell has an
 * execution number or some stayed `[ ]` (a cell failed and JupyterLab dropped the rest of the queue). Needs
 * windowingMode 'none' (the test's settings), else cells scrolled out of view are not in the page.
 */
async function waitForLabRunAll(page: Page, timeoutMs: number): Promise<{ numbered: number; total: number }> {
  const handle = await page.waitForFunction(
    () => {
      const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].map(
        (p) => p.textContent?.trim() ?? '',
      );
      const idle =
        document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')?.getAttribute('data-status') ===
        'idle';
      const running = prompts.filter((p) => p.includes('*')).length;
      const numbered = prompts.filter((p) => /\[\d+\]/.test(p)).length;
      const w = window as unknown as { __pneumoIdleSince?: number };
      const settled = idle && running === 0 && numbered > 0;
      if (!settled) w.__pneumoIdleSince = undefined;
      else w.__pneumoIdleSince ??= Date.now();
      // A failed cell leaves later cells blank; wait a moment to be sure the queue is really drained.
      const done = settled && (numbered === prompts.length || Date.now() - (w.__pneumoIdleSince ?? Date.now()) > 3000);
      return done ? { numbered, total: prompts.length } : null;
    },
    undefined,
    { timeout: timeoutMs, polling: 250 },
  );
  return (await handle.jsonValue()) as { numbered: number; total: number };
}

/**
 * The test's own JupyterLab settings and page config (JUPYTERLAB_SETTINGS_DIR / JUPYTER_CONFIG_DIR point here), so
 * nothing of the user's or machine's Lab setup is read or changed.
 */
function writeLabConfig(tmp: string): void {
  const settings = path.join(tmp, 'lab-settings');
  const put = (file: string, value: unknown) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(value, null, 1));
  };
  // Autosave would write the executed outputs into the notebooks (copies here, but the test must not depend on that).
  put(path.join(settings, '@jupyterlab', 'docmanager-extension', 'plugin.jupyterlab-settings'), { autosave: false });
  // Every cell stays in the page, so the checks and the full-page screenshots see all of them.
  put(path.join(settings, '@jupyterlab', 'notebook-extension', 'tracker.jupyterlab-settings'), { windowingMode: 'none' });
  // No "receive Jupyter news?" toast and no update check: a machine without internet would only log failures.
  put(path.join(settings, '@jupyterlab', 'apputils-extension', 'notification.jupyterlab-settings'), {
    fetchNews: 'false',
    checkForUpdates: false,
  });
  // What `jupyter labextension disable` writes, scoped to this config dir. The debugger asks every new kernel for a
  // debug session; tslab has no debugger, and the extension logs "No active debugger session" errors.
  put(path.join(tmp, 'jupyter-config', 'labconfig', 'page_config.json'), {
    disabledExtensions: { '@jupyterlab/debugger-extension': true },
  });
}

describe.skipIf(skip)(`the live notebook UI, ${uiName}${skip ? ` — SKIPPED: ${unavailable}` : ''}`, () => {
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
      ...notebookEnv({ ...tinySettings(report.dataDir, report.workDir), epochs: LIVE_EPOCHS, imageSize: LIVE_IMAGE_SIZE }),
      PNEUMO_RUN_DIR: path.join(tmp, 'run'),
      // Early stopping off, so the run lasts exactly LIVE_EPOCHS epochs.
      PNEUMO_PATIENCE: '0',
      JUPYTER_CONFIG_DIR: path.join(tmp, 'jupyter-config'),
      JUPYTER_RUNTIME_DIR: path.join(tmp, 'jupyter-runtime'),
      JUPYTERLAB_SETTINGS_DIR: path.join(tmp, 'lab-settings'),
      JUPYTERLAB_WORKSPACES_DIR: path.join(tmp, 'lab-workspaces'),
    };
    // Jupyter refuses to start as root without --allow-root (containers, CI).
    const root = process.getuid?.() === 0 ? ['--allow-root'] : [];
    const common = ['--no-browser', '--ip=127.0.0.1', `--port=${port}`, '--port-retries=0', ...root];
    let args: string[];
    if (ui === 'lab') {
      writeLabConfig(tmp);
      args = ['lab', ...common, `--IdentityProvider.token=${token}`, `--ServerApp.root_dir=${nbDir}`];
    } else {
      args = ['notebook', ...common, `--NotebookApp.token=${token}`, `--notebook-dir=${nbDir}`];
    }
    console.log(`live notebook test: ${uiName}, ${jupyterExecutable()} ${args.join(' ').replace(token, '<token>')}`);
    server = spawn(jupyterExecutable()!, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
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

  const shot = (name: string) => path.join(screenshotDir(repoRoot), `${ui === 'lab' ? 'lab' : 'live'}-${name.replace('.ipynb', '')}.png`);

  /** Opens a notebook in JupyterLab, waits for the tslab kernel, chooses Run > Run All Cells; `during` runs meanwhile. */
  async function runNotebookLab(name: string, during?: (page: Page) => Promise<void>): Promise<{ page: Page; errors: WatchedErrors }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = watchPageErrors(page, JUPYTERLAB_NOISE);
    // `reset`: a fresh workspace, or JupyterLab reopens the previous test's notebook beside this one.
    await page.goto(`${base}/lab/tree/${name}?reset&token=${token}`);
    // "Idle" alone is not enough: until the toolbar names the tslab kernel, a kernel-selection dialog may still be
    // coming, and it would swallow Run All.
    await page.waitForFunction(
      (displayName) => {
        const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
        const kernel = panel?.querySelector('.jp-KernelName')?.textContent?.trim();
        const idle = panel?.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status') === 'idle';
        return kernel === displayName && idle && !document.querySelector('.jp-Dialog');
      },
      KERNEL_DISPLAY_NAME,
      { timeout: 90_000, polling: 250 },
    );
    await page.click('.lm-MenuBar-itemLabel:text-is("Run")');
    await page.click('.lm-Menu-item[data-command="runmenu:run-all"]');
    // Run All must have queued the cells; a click that went nowhere would otherwise look like a slow run.
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].some((p) =>
          /\[(\*|\d+)\]/.test(p.textContent ?? ''),
        ),
      undefined,
      { timeout: 30_000, polling: 100 },
    );
    const running = during?.(page);
    const result = await waitForLabRunAll(page, 5 * 60_000);
    await running;
    if (result.numbered < result.total) {
      const stderr = await page
        .locator('.jp-NotebookPanel:not(.lm-mod-hidden) [data-mime-type="application/vnd.jupyter.stderr"]')
        .allTextContents();
      throw new Error(
        `${name}: Run All stopped after ${result.numbered} of ${result.total} code cells:\n${stderr.join('\n').slice(0, 4000)}`,
      );
    }
    return { page, errors };
  }

  /** A full-page screenshot of JupyterLab: the notebook scrolls inside the app, so the viewport grows to fit it. */
  async function labScreenshot(page: Page, file: string): Promise<void> {
    const height = await page.evaluate(() => {
      const scroller = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
      if (scroller) scroller.scrollTop = 0; // Run All leaves it scrolled to the last cell
      return scroller ? scroller.scrollHeight + 200 : 900;
    });
    await page.setViewportSize({ width: 1280, height: Math.min(Math.max(height, 900), 12_000) });
    await page.waitForTimeout(500);
    await page.screenshot({ path: file });
    await page.setViewportSize({ width: 1280, height: 900 });
  }

  async function runNotebook(name: string, during?: (page: Page) => Promise<void>): Promise<{ page: Page; errors: WatchedErrors }> {
    if (ui === 'lab') return runNotebookLab(name, during);
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors = watchPageErrors(page, [CLASSIC_NOTEBOOK_NOISE]);
    await page.goto(`${base}/notebooks/${name}?token=${token}`);
    // The kernel must be connected before Run All, or the executions are dropped.
    await page.waitForFunction(
      () => {
        const kernel = (window as unknown as { Jupyter?: { notebook?: { kernel?: { is_connected(): boolean } } } }).Jupyter?.notebook
          ?.kernel;
        return Boolean(kernel?.is_connected()) && document.querySelector('#kernel_indicator_icon.kernel_idle_icon') !== null;
      },
      undefined,
      { timeout: 60_000, polling: 250 },
    );
    // Cell > Run All, through the menu bar like a user.
    await page.click('#menus a.dropdown-toggle:text-is("Cell")');
    await page.click('#run_all_cells a');
    const running = during?.(page);
    await waitForRunAll(page, 5 * 60_000);
    await running;
    return { page, errors };
  }

  /** Where outputs live in each UI. */
  const sel =
    ui === 'lab'
      ? {
          root: '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook',
          error:
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-child:has(.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]):has-text("Error")',
          html: '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedHTMLCommon',
          text: '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedText',
        }
      : { root: '#notebook', error: '#notebook .output_error', html: '#notebook .output_html', text: '#notebook .output_text' };

  async function assertRendered(page: Page, name: string, errors: WatchedErrors): Promise<{ charts: number; images: number }> {
    const cellErrors = await page.locator(sel.error).allTextContents();
    expect(cellErrors, `${name}: a cell failed in the live notebook`).toEqual([]);
    const expected = await page.locator(`${sel.root} div.pneumo-figure`).count();
    const charts = await waitForCharts(page, expected, 60_000, sel.root);
    const images = await page
      .locator(`${sel.root} .pneumo-images img`)
      .evaluateAll((imgs) => imgs.map((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0));
    if (ui === 'lab') {
      await labScreenshot(page, shot(name));
    } else {
      // The classic notebook scrolls inside #site; let the page grow so the full-page screenshot shows every cell.
      await page.addStyleTag({
        content: '#site { height: auto !important; overflow: visible !important; } body { overflow: visible !important; }',
      });
      await page.screenshot({ path: shot(name), fullPage: true });
    }
    expect(charts.charts, `${name}: charts drawn vs figure containers`).toBe(expected);
    expect(charts.empty, `${name}: charts without data traces`).toBe(0);
    expect(images.every(Boolean), `${name}: an image failed to load`).toBe(true);
    // Anything but the notebook page's own known noise came from an output (e.g. plotly failing).
    if (errors.ignored.length)
      console.log(
        `${name}: set aside as ${ui === 'lab' ? "JupyterLab's" : "the classic notebook's"} own page noise:\n  ${errors.ignored.join('\n  ')}`,
      );
    expect(errors.errors, `${name}: console errors`).toEqual([]);
    return { charts: charts.charts, images: images.length };
  }

  it(
    `04-train in ${uiName}: Run All trains with the live progress display updated in place, then the loss/accuracy and LR charts`,
    async () => {
      let midTraining = '';
      const { page, errors } = await runNotebook('04-train.ipynb', async (p) => {
        // Record every state the live display passes through, straight from the DOM, while training runs.
        await p.evaluate((htmlSel) => {
          const w = window as unknown as { __pneumoProgress: string[] };
          w.__pneumoProgress = [];
          const record = () => {
            const bar = document.querySelector(`${htmlSel} progress`);
            const text = bar?.parentElement?.textContent?.replace(/\s+/g, ' ').trim();
            if (text && w.__pneumoProgress[w.__pneumoProgress.length - 1] !== text) w.__pneumoProgress.push(text);
          };
          new MutationObserver(record).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
        }, sel.html);
        // A few epochs in, so the screenshot shows the bar and finished rows; training that ends first also ends the wait.
        await p.waitForFunction(
          (htmlSel) => {
            const text = document.querySelector(`${htmlSel} progress`)?.parentElement?.textContent ?? '';
            const epoch = Number(/Epoch (\d+)\//.exec(text)?.[1] ?? 0);
            return epoch >= 3 || [...document.querySelectorAll(htmlSel)].some((el) => el.textContent?.includes('Done: '));
          },
          sel.html,
          { timeout: 4 * 60_000, polling: 'raf' },
        );
        // The live display replaces its element about every 100 ms, so a locator can go stale between finding the bar
        // and scrolling to it; scrolling inside the page, in one step, cannot.
        await p.evaluate((htmlSel) => document.querySelector(`${htmlSel} progress`)?.scrollIntoView({ block: 'center' }), sel.html);
        const file = shot('04-train-mid-training');
        await p.screenshot({ path: file });
        midTraining = (await p.locator(`${sel.html} progress`).count()) > 0 ? file : '';
      });
      const result = await assertRendered(page, '04-train.ipynb', errors);
      expect(result.charts).toBe(2);
      const states = await page.evaluate(() => (window as unknown as { __pneumoProgress: string[] }).__pneumoProgress);
      console.log(`04-train live display went through ${states.length} states, e.g.:\n  ${states.slice(0, 4).join('\n  ')}`);
      console.log(midTraining ? `mid-training screenshot: ${midTraining}` : 'training ended before the mid-training screenshot was taken');
      // One display, redrawn: it showed several epochs' progress bars, and ended as a single table with a row per epoch.
      expect(new Set(states.map((s) => /Epoch (\d+)\//.exec(s)?.[1]).filter(Boolean)).size).toBeGreaterThanOrEqual(2);
      // The epoch table of the live display (history.csv's own table further down is a .pneumo-table).
      const progressTables = page.locator(`${sel.html} table:not(.pneumo-table):has(th:text-is("val_auc"))`);
      expect(await progressTables.count(), 'the progress display was appended to instead of updated in place').toBe(1);
      expect(await progressTables.first().locator('tr').count()).toBe(LIVE_EPOCHS + 1);
      expect(await page.locator(`${sel.html}:has-text("Done: ${LIVE_EPOCHS} epoch(s)")`).count()).toBe(1);
      expect(fs.existsSync(path.join(tmp, 'run', 'model', 'model.json'))).toBe(true);
      await page.close();
    },
    6 * 60_000,
  );

  it(
    `05-evaluate in ${uiName}: Run All on the model 04 just trained shows the confusion matrix, ROC, PR, probability histogram and comparison charts and Grad-CAM images`,
    async () => {
      const { page, errors } = await runNotebook('05-evaluate.ipynb');
      const result = await assertRendered(page, '05-evaluate.ipynb', errors);
      expect(result.charts).toBe(5);
      expect(await page.locator(`${sel.root} .js-plotly-plot .main-svg g.hm`).count()).toBe(1); // the confusion heatmap
      const mistakes = await page.locator(`${sel.root} .pneumo-images img`).count();
      const noMistakes = await page.locator(`${sel.text}:has-text("No test mistakes")`).count();
      expect(mistakes > 0 || noMistakes > 0).toBe(true);
      await page.close();
    },
    6 * 60_000,
  );
});
