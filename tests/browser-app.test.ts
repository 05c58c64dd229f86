/**
 * The web app (`npm run app`) in headless Chromium, opened from disk the way a user double-clicks index.html:
 * films picked with the file input get the probability `npm run predict` gives (within 1e-3), the pixels the
 * model saw and the Grad-CAM overlay are drawn, and bad files get a message while the tab stays responsive.
 * The run is a tiny demo run trained here (a few seconds), so the test needs no Jupyter.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as tf from '@tensorflow/tfjs';
import type { Browser, Page } from 'playwright-core';
import { generateDemoDataset } from '../src/data/demo';
import { main as runMain } from '../src/cli/run';
import { classifyFile } from '../src/cli/predict';
import { main as appMain } from '../src/cli/app';
import { appIndexFor, buildApp, type BuildAppResult } from '../src/app/build';
import { gradCam, overlayRgb } from '../src/evaluate/gradcam';
import { loadModel } from '../src/runs/model-files';
import { chromiumPath, launchChromium, screenshotDir, watchPageErrors } from './browser-helpers';
import { jupyterRequired, repoRoot } from './report-fixture';

const unavailable = chromiumPath() ? null : 'chromium is not installed (apt-get install chromium)';
const skip = unavailable !== null && !jupyterRequired();
const SHARED = path.resolve(repoRoot, '..', 'shared', 'data', 'chest_xray', 'train');
/** What the issue asks of the page, on whatever backend it picked. */
const TOLERANCE = 1e-3;
/**
 * The one-epoch fixture model barely reacts to its input (feeding it pixels / 256 instead of / 255 moved its
 * probabilities by under 9e-4), so 1e-3 alone would not catch a preprocessing slip here. On the 50 shared films
 * and the wasm backend the page is held to 1e-4: measured about 1e-7 there (the synthetic demo films, whose
 * fixture model changes every run as dropout is unseeded, have differed by up to 3e-5).
 */
const WASM_TOLERANCE = 1e-4;

let tmp: string;
let dataDir: string;
let runDir: string;
let app: BuildAppResult;
let model: tf.LayersModel;

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

function demoTestImages(): string[] {
  return ['NORMAL', 'PNEUMONIA'].flatMap((c) => {
    const folder = path.join(dataDir, 'test', c);
    return fs
      .readdirSync(folder)
      .filter((f) => f.endsWith('.jpeg'))
      .sort()
      .map((f) => path.join(folder, f));
  });
}

/** Every n-th file of both shared classes, `count` in all, or [] without the shared data. */
function sharedImages(count: number): string[] {
  if (!fs.existsSync(SHARED)) return [];
  return ['NORMAL', 'PNEUMONIA'].flatMap((c) => {
    const names = fs
      .readdirSync(path.join(SHARED, c))
      .filter((f) => f.endsWith('.jpeg'))
      .sort();
    const step = Math.floor(names.length / (count / 2));
    return Array.from({ length: count / 2 }, (_, i) => path.join(SHARED, c, names[i * step]));
  });
}

/** A real, valid 20000x20000 1-bit grey PNG (about 50 kB: every row is zeros). */
function hugePng(file: string): void {
  const side = 20000;
  const row = Buffer.alloc(1 + side / 8);
  const raw = Buffer.concat(Array.from({ length: side }, () => row));
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(8 + data.length + 4);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(zlib.crc32(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  fs.writeFileSync(
    file,
    Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]),
  );
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-app-'));
  dataDir = path.join(tmp, 'demo');
  await generateDemoDataset({ outDir: dataDir, perClass: 24, testPerClass: 6, size: 96, seed: 5 });
  const runsDir = path.join(tmp, 'runs');
  const quick = ['--epochs', '1', '--limit', '20', '--image-size', '64', '--variant', 'small', '--backend', 'wasm'];
  const c = capture();
  const code = await runMain(['--data', dataDir, '--out', runsDir, '--name', 'app', ...quick], c.io, { handleSigint: false });
  if (code !== 0) throw new Error(`training the fixture run failed:\n${c.err.join('\n')}`);
  runDir = path.join(runsDir, fs.readdirSync(runsDir)[0]);
  app = await buildApp({ runDir });
  model = await loadModel(path.join(runDir, 'model'));
}, 240_000);

afterAll(() => {
  model?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('npm run app (building the folder)', () => {
  it('writes a self-contained folder in the run, which appIndexFor finds', () => {
    expect(app.outDir).toBe(path.join(runDir, 'app'));
    expect(appIndexFor(runDir)).toBe(path.join(runDir, 'app', 'index.html'));
    expect(appIndexFor(tmp)).toBeUndefined();
    const names = app.files.map((f) => f.name).sort();
    expect(names).toEqual([
      'app.js',
      'index.html',
      'model.js',
      path.join('model', 'model.json'),
      path.join('model', 'weights.bin'),
      'settings.json',
      'wasm.js',
    ]);
    const html = fs.readFileSync(app.index, 'utf8');
    const metrics = JSON.parse(fs.readFileSync(path.join(runDir, 'metrics.json'), 'utf8'));
    expect(html).toContain(metrics.threshold.toFixed(4));
    expect(html).toMatch(/not a diagnostic device/);
    // The fixture run learnt from the synthetic demo set, and the page must not pass it off as X-rays.
    expect(html).toMatch(/<em>synthetic<\/em> radiograph-like pictures/);
    expect(html).not.toMatch(/Kermany/);
    // Nothing is fetched from the network: no http(s) URL in a src or href.
    expect(html).not.toMatch(/(src|href)="https?:/);
    expect(app.settings).toMatchObject({ imageSize: 64, fit: 'fill', channels: 1, weights: 'float32', threshold: metrics.threshold });
  });

  it('quantizes to 8 bits, measures the cost on the test split, and explains a bad --run', async () => {
    const c = capture();
    const out = path.join(tmp, 'app-q8');
    expect(await appMain(['--run', runDir, '--out', out, '--quantize', '8'], c.io)).toBe(0);
    const text = c.out.join('\n');
    const split = JSON.parse(fs.readFileSync(path.join(runDir, 'split.json'), 'utf8'));
    expect(text).toMatch(new RegExp(`Quantization to 8 bits, on the run's ${split.test.length} test images: accuracy`));
    const settings = JSON.parse(fs.readFileSync(path.join(out, 'settings.json'), 'utf8'));
    expect(settings.weights).toBe('uint8');
    // The float accuracy recomputed here is the one the run recorded: same images, same decoding, same model.
    expect(settings.quantizationCost.floatAccuracy).toBeCloseTo(settings.quantizationCost.recordedAccuracy, 10);
    const floatWeights = fs.statSync(path.join(runDir, 'model', 'weights.bin')).size;
    expect(fs.statSync(path.join(out, 'model', 'weights.bin')).size).toBeLessThan(floatWeights / 3.5);

    const bad = capture();
    expect(await appMain(['--run', tmp], bad.io)).toBe(1);
    expect(bad.err.join('\n')).toMatch(/^app: .* has no config\.json; pass a finished run folder/m);
    expect(await appMain(['--quantize', '4'], capture().io)).toBe(2);
  });
});

describe.skipIf(skip)(`the web app in Chromium, opened from file://${skip ? ` — SKIPPED: ${unavailable}` : ''}`, () => {
  let browser: Browser;

  beforeAll(async () => {
    if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  async function openPage(query: string, index = app.index): Promise<{ page: Page; errors: string[]; ready: string }> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const watched = watchPageErrors(page);
    await page.goto(`file://${index}${query}`);
    await page.waitForFunction(() => document.body.dataset.ready, undefined, { timeout: 60_000 });
    return { page, errors: watched.errors, ready: (await page.evaluate(() => document.body.dataset.ready))! };
  }

  async function openApp(query = '', index = app.index): Promise<{ page: Page; errors: string[] }> {
    const { page, errors, ready } = await openPage(query, index);
    expect(ready, (await page.textContent('#status')) ?? '').toBe('true');
    return { page, errors };
  }

  async function upload(page: Page, files: string[]): Promise<void> {
    const before = await page.locator('.result').count();
    await page.setInputFiles('#files', files);
    await page.waitForFunction(
      (n) => document.querySelectorAll('.result').length >= n && !document.body.dataset.busy,
      before + files.length,
      {
        timeout: 180_000,
      },
    );
  }

  async function pageProbabilities(page: Page): Promise<Map<string, number>> {
    const rows = await page.$$eval('.result:not(.error)', (els) =>
      els.map((e) => [(e as HTMLElement).dataset.file!, Number((e as HTMLElement).dataset.probability)] as const),
    );
    return new Map(rows);
  }

  async function largestDifference(page: Page, files: string[], nodeModel = model): Promise<number> {
    const shown = await pageProbabilities(page);
    let worst = 0;
    for (const file of files) {
      const { probability } = await classifyFile(nodeModel, file, 'fill');
      const onPage = shown.get(path.basename(file));
      expect(onPage, `${file} has no result on the page`).toBeTypeOf('number');
      worst = Math.max(worst, Math.abs(onPage! - probability));
    }
    return worst;
  }

  it('picks a backend that works, shows it, and gives npm run predict probabilities, input pixels and overlay', async () => {
    const { page, errors } = await openApp();
    const backend = await page.evaluate(() => document.body.dataset.backend);
    expect(['webgpu', 'webgl', 'wasm', 'cpu']).toContain(backend);
    expect(await page.textContent('#status')).toContain(`tfjs backend: ${backend}`);
    const files = demoTestImages();
    await upload(page, files);
    const worst = await largestDifference(page, files);
    console.log(`backend ${backend}: largest |page - predict| over ${files.length} demo films: ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(TOLERANCE);

    // The decision shown is the probability against the run's threshold.
    const decisions = await page.$$eval('.result:not(.error)', (els) =>
      els.map((e) => [Number((e as HTMLElement).dataset.probability), (e as HTMLElement).dataset.decision] as const),
    );
    for (const [p, d] of decisions) expect(d).toBe(p >= app.settings.threshold ? 'PNEUMONIA' : 'NORMAL');

    // The canvases hold what Node computes: the model's input pixels and the same Grad-CAM blend.
    const file = files[files.length - 1];
    const drawn = await page.evaluate((name) => {
      const card = [...document.querySelectorAll<HTMLElement>('.result')].find((e) => e.dataset.file === name)!;
      const [input, overlay] = [...card.querySelectorAll('canvas')].map((c) =>
        Array.from(c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data),
      );
      return { input, overlay };
    }, path.basename(file));
    const { pixels } = await classifyFile(model, file, 'fill');
    const size = app.settings.imageSize;
    expect(drawn.input.length).toBe(size * size * 4);
    const inputDiff = Math.max(...Array.from(pixels, (v, p) => Math.abs(drawn.input[p * 4] - v)));
    expect(inputDiff).toBeLessThanOrEqual(1); // decode.ts's own tolerance between its JPEG paths
    const { heatmap } = await gradCam(model, pixels, size);
    const expected = overlayRgb(pixels, heatmap, 0.4);
    let overlayDiff = 0;
    let coloured = 0;
    for (let p = 0; p < size * size; p++) {
      for (let c = 0; c < 3; c++) overlayDiff = Math.max(overlayDiff, Math.abs(drawn.overlay[p * 4 + c] - expected[p * 3 + c]));
      if (drawn.overlay[p * 4] !== drawn.overlay[p * 4 + 2]) coloured++;
    }
    expect(coloured).toBeGreaterThan(size * size * 0.5); // a jet overlay, not the grey film
    expect(overlayDiff).toBeLessThanOrEqual(3);
    await page.screenshot({ path: path.join(screenshotDir(repoRoot), 'app-demo-films.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  }, 300_000);

  it('a forced ?backend=webgl (software WebGL in headless Chromium, which the page skips on its own) matches too', async (ctx) => {
    const { page, errors, ready } = await openPage('?backend=webgl');
    const status = (await page.textContent('#status')) ?? '';
    if (ready !== 'true') {
      await page.close();
      ctx.skip(); // no WebGL at all in this browser: nothing to compare
    }
    expect(status).toBe('Ready. tfjs backend: webgl');
    const files = demoTestImages().slice(0, 4);
    await upload(page, files);
    const worst = await largestDifference(page, files);
    console.log(`forced webgl: largest |page - predict| over ${files.length} demo films: ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(TOLERANCE);
    expect(errors).toEqual([]);
    await page.close();
  }, 300_000);

  it('a 16-bit quantized app gives what its quantized model gives in Node', async () => {
    const quantized = await buildApp({ runDir, outDir: path.join(tmp, 'app-q16'), quantize: 16 });
    const nodeModel = await loadModel(path.join(quantized.outDir, 'model'));
    try {
      const { page, errors } = await openApp('?backend=wasm', quantized.index);
      expect(await page.textContent('body')).toContain('weights quantized to uint16');
      const files = demoTestImages().slice(0, 4);
      await upload(page, files);
      expect(await largestDifference(page, files, nodeModel)).toBeLessThan(TOLERANCE);
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      nodeModel.dispose();
    }
  }, 300_000);

  it('a film dropped on the drop zone is classified like a picked one', async () => {
    const { page, errors } = await openApp('?backend=wasm');
    const file = demoTestImages()[1];
    const bytes = Array.from(fs.readFileSync(file));
    const dataTransfer = await page.evaluateHandle((data) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(data)], 'dropped.jpeg', { type: 'image/jpeg' }));
      return dt;
    }, bytes);
    await page.dispatchEvent('#drop', 'drop', { dataTransfer });
    await page.waitForFunction(() => document.querySelectorAll('.result').length === 1 && !document.body.dataset.busy, undefined, {
      timeout: 60_000,
    });
    const shown = (await pageProbabilities(page)).get('dropped.jpeg');
    const { probability } = await classifyFile(model, file, 'fill');
    expect(Math.abs(shown! - probability)).toBeLessThan(TOLERANCE);
    expect(errors).toEqual([]);
    await page.close();
  }, 120_000);

  it('bad files get a message on the page and the tab keeps working', async () => {
    const { page, errors } = await openApp('?backend=wasm');
    const text = path.join(tmp, 'notes.jpeg');
    fs.writeFileSync(text, 'These are my notes, not an X-ray.\n');
    const empty = path.join(tmp, 'empty.jpeg');
    fs.writeFileSync(empty, '');
    const huge = path.join(tmp, 'huge-20000.png');
    hugePng(huge);
    const good = demoTestImages()[0];
    const started = Date.now();
    await upload(page, [text, empty, huge, good]);
    expect(Date.now() - started).toBeLessThan(30_000);
    const messages = await page.$$eval('.result.error', (els) =>
      els.map((e) => [(e as HTMLElement).dataset.file, e.querySelector('.message')!.textContent] as const),
    );
    expect(new Map(messages)).toEqual(
      new Map([
        ['notes.jpeg', 'Cannot use this file: not a JPEG or PNG image (content starts with text "These are my notes, not an X-ray...")'],
        ['empty.jpeg', 'Cannot use this file: empty file (0 bytes)'],
        [
          'huge-20000.png',
          "Cannot use this file: image is 20000x20000 pixels (400 megapixels); this page decodes at most 40 megapixels in browser memory. Shrink it, or use 'npm run predict' (up to 20000x20000).",
        ],
      ]),
    );
    // The film after the bad ones was still classified, on the forced wasm backend.
    expect(await page.evaluate(() => document.body.dataset.backend)).toBe('wasm');
    expect(await largestDifference(page, [good])).toBeLessThan(TOLERANCE);
    await page.screenshot({ path: path.join(screenshotDir(repoRoot), 'app-bad-files.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  }, 300_000);

  const shared = sharedImages(50);
  it.skipIf(shared.length === 0)(
    `50 shared Kaggle films on the wasm backend match npm run predict${shared.length ? '' : ` — SKIPPED: no ${SHARED}`}`,
    async () => {
      const { page, errors } = await openApp('?backend=wasm');
      await upload(page, shared);
      const worst = await largestDifference(page, shared);
      console.log(`wasm: largest |page - predict| over ${shared.length} shared films: ${worst.toExponential(2)}`);
      expect(worst).toBeLessThan(WASM_TOLERANCE);
      expect(errors).toEqual([]);
      await page.close();
    },
    300_000,
  );
});
