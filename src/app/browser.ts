/**
 * The web page's script (bundled by src/app/build.ts into app.js): loads the embedded model, picks a tfjs backend,
 * and classifies dropped films with the training preprocessing and Grad-CAM.
 *
 * Everything arrives as classic scripts (model.js, wasm.js) rather than by fetch, because a page opened from
 * file:// may not fetch its neighbours; the wasm binaries are data: URLs for the same reason.
 */
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-webgpu';
// Registers the input-normalization layer, so a model trained with --normalize loads in the page.
import '../model/normalization';
import { predictImage } from '../model/input';
import { maxPoolGrad } from '../accel/browser';
import { gradCam, overlayRgb } from '../evaluate/gradcam';
import { checkImageBytes, PAGE_MAX_BYTES, rgbaToModelInput } from './image';
import { type AppSettings, type EmbeddedModel, MODEL_GLOBAL, SETTINGS_ELEMENT_ID, WASM_GLOBAL } from './settings';

/**
 * Grad-CAM back-propagates through the last max-pool; the stock wasm MaxPoolGrad put heat up to 0.10 (of 1) away
 * from the cpu backend's map on the seed model, the project's own kernel (used for training on wasm) matches it.
 */
function useProjectMaxPoolGrad(): void {
  if (tf.getKernel('MaxPoolGrad', 'wasm')) tf.unregisterKernel('MaxPoolGrad', 'wasm');
  tf.registerKernel({ kernelName: 'MaxPoolGrad', backendName: 'wasm', kernelFunc: maxPoolGrad as unknown as tf.KernelFunc });
}

/** Fastest first; each is tried for real (a tiny computation), since a registered backend may still fail to start. */
const BACKENDS = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;
const OVERLAY_ALPHA = 0.4;

type Globals = Record<string, unknown>;

function settingsFromPage(): AppSettings {
  const element = document.getElementById(SETTINGS_ELEMENT_ID);
  if (!element?.textContent) throw new Error('the page has no settings block; rebuild it with npm run app');
  return JSON.parse(element.textContent) as AppSettings;
}

function base64Bytes(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function loadEmbeddedModel(): Promise<tf.LayersModel> {
  const embedded = (window as unknown as Globals)[MODEL_GLOBAL] as EmbeddedModel | undefined;
  if (!embedded) throw new Error('model.js did not load (it must sit next to index.html)');
  const weights = base64Bytes(embedded.weightDataBase64);
  return tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: embedded.modelTopology,
      weightSpecs: embedded.weightSpecs as tf.io.WeightsManifestEntry[],
      weightData: weights.buffer as ArrayBuffer,
    }),
  );
}

/** The WebGL renderer's name when it is a software rasteriser (Chromium's SwiftShader with --disable-gpu, Mesa's llvmpipe). */
function softwareWebGl(): string | undefined {
  const gl = document.createElement('canvas').getContext('webgl2') ?? document.createElement('canvas').getContext('webgl');
  if (!gl) return undefined;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  return /swiftshader|llvmpipe|softpipe|software/i.test(renderer) ? renderer : undefined;
}

/** Why `name` cannot run here, or undefined once it is the active backend. */
async function tryBackend(name: string, forced: boolean): Promise<string | undefined> {
  if (name === 'webgpu') {
    // Asking first spares the console tfjs's stack trace for a missing adapter.
    const gpu = (navigator as unknown as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
    if (!gpu) return 'navigator.gpu is absent';
    if (!(await gpu.requestAdapter().catch(() => null))) return 'no WebGPU adapter';
  }
  // Measured on 50 films in headless Chromium: software WebGL took 93 s, wasm 3.7 s.
  const software = name === 'webgl' && !forced ? softwareWebGl() : undefined;
  if (software) return `software rendering (${software}), slower than wasm`;
  try {
    if (!(await tf.setBackend(name))) return 'did not initialise';
    await tf.ready();
    const probe = tf.tidy(() => tf.scalar(2).mul(tf.scalar(3)));
    const value = (await probe.data())[0];
    probe.dispose();
    return value === 6 ? undefined : `computed 2*3 = ${value}`;
  } catch (err) {
    return (err as Error)?.message ?? String(err);
  }
}

/** The first backend that starts, in BACKENDS order, or only the one named by ?backend= in the page address. */
async function pickBackend(): Promise<{ name: string; skipped: string[] }> {
  const wasm = (window as unknown as Globals)[WASM_GLOBAL] as Record<string, string> | undefined;
  // Only the single-threaded binaries are shipped: threads need cross-origin isolation, which file:// never has.
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  if (wasm) {
    // setWasmPaths wants an entry for every binary; the threaded one is never requested with the flag off.
    setWasmPaths({ ...wasm, 'tfjs-backend-wasm-threaded-simd.wasm': wasm['tfjs-backend-wasm-simd.wasm'] });
  }
  useProjectMaxPoolGrad();
  const forced = new URLSearchParams(location.search).get('backend');
  const order = forced ? [forced] : [...BACKENDS];
  const skipped: string[] = [];
  for (const name of order) {
    if (name === 'wasm' && !wasm) {
      skipped.push('wasm: wasm.js did not load');
      continue;
    }
    const why = await tryBackend(name, Boolean(forced));
    if (!why) return { name, skipped };
    skipped.push(`${name}: ${why}`);
  }
  throw new Error(`no tfjs backend started (${skipped.join('; ')})`);
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const el = Object.assign(document.createElement(tag), props);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A size x size RGB or grey image drawn on a canvas of that size (CSS scales it for display). */
function drawPixels(pixels: Uint8Array, size: number, channels: 1 | 3): HTMLCanvasElement {
  const canvas = element('canvas', { width: size, height: size });
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('this browser gives no 2D canvas');
  const image = ctx.createImageData(size, size);
  for (let p = 0; p < size * size; p++) {
    for (let c = 0; c < 3; c++) image.data[p * 4 + c] = pixels[p * channels + (channels === 3 ? c : 0)];
    image.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/** RGBA pixels as the file stores them: no colour-profile conversion, no alpha premultiplication. */
async function decodeRgba(bytes: Uint8Array): Promise<{ rgba: Uint8ClampedArray; width: number; height: number }> {
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes as BlobPart]), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new Error('corrupt or unreadable image (the browser could not decode it)');
  }
  try {
    const canvas = element('canvas', { width: bitmap.width, height: bitmap.height });
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) throw new Error('this browser gives no 2D canvas');
    ctx.drawImage(bitmap, 0, 0);
    return { rgba: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data, width: bitmap.width, height: bitmap.height };
  } finally {
    bitmap.close();
  }
}

interface Analysis {
  pixels: Uint8Array;
  probability: number;
  heatmap: Float32Array;
}

async function analyse(file: File, model: tf.LayersModel, s: AppSettings): Promise<Analysis> {
  if (file.size > PAGE_MAX_BYTES)
    throw new Error(`file is ${(file.size / 2 ** 20).toFixed(0)} MB; the page reads at most ${PAGE_MAX_BYTES / 2 ** 20} MB`);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const check = checkImageBytes(bytes);
  if (!check.ok) throw new Error(check.message);
  const { rgba, width, height } = await decodeRgba(bytes);
  const pixels = rgbaToModelInput(rgba, width, height, s.imageSize, s.fit);
  const probability = predictImage(model, pixels);
  const { heatmap } = await gradCam(model, pixels, s.imageSize);
  return { pixels, probability, heatmap };
}

function resultCard(file: File, s: AppSettings, a: Analysis): HTMLElement {
  const decision = a.probability >= s.threshold ? 'PNEUMONIA' : 'NORMAL';
  const card = element('article', { className: 'result' });
  card.dataset.file = file.name;
  card.dataset.probability = String(a.probability);
  card.dataset.decision = decision;
  card.append(element('h3', {}, file.name));
  const input = element('figure');
  input.append(drawPixels(a.pixels, s.imageSize, 1), element('figcaption', {}, `What the model saw: ${s.imageSize}x${s.imageSize} grey`));
  const overlay = element('figure');
  const overlayCanvas = drawPixels(overlayRgb(a.pixels, a.heatmap, OVERLAY_ALPHA), s.imageSize, 3);
  overlayCanvas.className = 'overlay';
  overlay.append(overlayCanvas, element('figcaption', {}, 'Grad-CAM: where the evidence for pneumonia was'));
  const images = element('div', { className: 'images' });
  images.append(input, overlay);
  card.append(
    images,
    element('p', { className: 'probability' }, `Probability of pneumonia: ${(100 * a.probability).toFixed(1)}%`),
    element('p', { className: `decision ${decision}` }, `Decision at threshold ${s.threshold.toFixed(4)}: ${decision}`),
  );
  return card;
}

function errorCard(file: File, message: string): HTMLElement {
  const card = element('article', { className: 'result error' });
  card.dataset.file = file.name;
  card.dataset.error = message;
  card.append(element('h3', {}, file.name), element('p', { className: 'message' }, `Cannot use this file: ${message}`));
  return card;
}

async function main(): Promise<void> {
  const status = document.getElementById('status')!;
  const input = document.getElementById('files') as HTMLInputElement;
  const drop = document.getElementById('drop')!;
  const results = document.getElementById('results')!;
  let model: tf.LayersModel;
  let s: AppSettings;
  let ready: string;
  try {
    s = settingsFromPage();
    const backend = await pickBackend();
    model = await loadEmbeddedModel();
    ready = `Ready. tfjs backend: ${backend.name}` + (backend.skipped.length ? ` (not available: ${backend.skipped.join('; ')})` : '');
    status.textContent = ready;
    document.body.dataset.backend = backend.name;
    document.body.dataset.ready = 'true';
  } catch (err) {
    status.textContent = `The model could not start: ${(err as Error)?.message ?? String(err)}`;
    status.className = 'error';
    document.body.dataset.ready = 'failed';
    return;
  }

  let queue = Promise.resolve();
  const handle = (files: FileList | null) => {
    const list = Array.from(files ?? []);
    queue = queue.then(async () => {
      document.body.dataset.busy = 'true';
      for (const [i, file] of list.entries()) {
        status.textContent = `Analysing ${file.name} (${i + 1} of ${list.length})...`;
        await tf.nextFrame(); // let the page paint between films
        try {
          results.append(resultCard(file, s, await analyse(file, model, s)));
        } catch (err) {
          results.append(errorCard(file, (err as Error)?.message ?? String(err)));
        }
      }
      status.textContent = ready;
      delete document.body.dataset.busy;
    });
  };
  input.addEventListener('change', () => {
    handle(input.files);
    input.value = '';
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    handle(e.dataTransfer?.files ?? null);
  });
}

void main();
