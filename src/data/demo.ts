/**
 * A small SYNTHETIC chest-radiograph-like dataset, drawn from scratch, so the whole workflow can run
 * (and be tested) without the real Kermany et al. images. These pictures are not medical data.
 *
 * Each image is a cartoon of a frontal chest film: torso, two dark lung fields, rib arcs, spine,
 * heart shadow and noise. PNEUMONIA images add patchy or diffuse brighter opacities inside the
 * lung fields. Geometry, exposure and opacity strength vary, so the classes are learnable but overlap.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { LABELS, type Label } from '../types';
import { deriveSeed, makeRng, type Rng } from '../random';

export interface DemoOptions {
  outDir: string;
  /** Training images per class (default 300). */
  perClass?: number;
  /** Test images per class (default 50). */
  testPerClass?: number;
  /** Square image side in pixels (default 224). */
  size?: number;
  seed?: number;
}

export interface DemoResult {
  root: string;
  /** Image count per `split/CLASS`, e.g. `train/NORMAL`. */
  counts: Record<string, number>;
}

/** Shapes are in image-relative units (0..1), so one set of parameters renders at any size. */
export interface Ellipse {
  cx: number;
  cy: number;
  rx: number;
  ry: number;
}

/** A soft bright patch: consolidation in PNEUMONIA images, faint vessel markings in both classes. */
export interface Opacity {
  cx: number;
  cy: number;
  radius: number;
  strength: number;
}

/** Per-patient anatomy: shared by all images of one synthetic patient, so patient-level splits matter. */
export interface Anatomy {
  body: Ellipse;
  lungs: [Ellipse, Ellipse];
  heart: Ellipse;
  spineX: number;
  spineWidth: number;
  ribSpacing: number;
  ribCurvature: number;
  ribPhase: number;
}

export interface XrayParams extends Anatomy {
  label: Label;
  opacities: Opacity[];
  /** Overall haze added over the lung fields (0 for NORMAL, larger for diffuse pneumonia). */
  diffuseHaze: number;
  brightness: number;
  contrast: number;
  gamma: number;
  noiseLevel: number;
  /** Seeds the pixel noise and the patchiness texture, so rendering is a pure function of the params. */
  textureSeed: number;
}

export const DEMO_DISCLAIMER =
  'SYNTHETIC DATA: these images were drawn by a program in this project. They are not radiographs, ' +
  'contain no patient data and must not be used for any medical purpose.';

/**
 * 300 images a class: with 120, the 10 default epochs were 7 steps each, too few for the seed CNN under the default
 * augmentation (one run: test AUC 0.90 with 120 against 0.98 with 300). With 300, seeds 42 / 1 / 2 gave test AUC
 * 0.94 / 0.92 / 0.97 (README "Results").
 */
export const DEMO_DEFAULTS = Object.freeze({ perClass: 300, testPerClass: 50, size: 224, seed: 42 });
const SPLITS = ['train', 'test'] as const;
/** Marks a folder as ours, so regenerating may replace it without risking a user's real data. */
const README_NAME = 'README.txt';
const README_MARKER = 'pneumonia-xray synthetic demo dataset';

function between(rng: Rng, lo: number, hi: number): number {
  return lo + (hi - lo) * rng();
}

export function sampleAnatomy(rng: Rng): Anatomy {
  const cx = between(rng, 0.47, 0.53);
  const cy = between(rng, 0.5, 0.56);
  const lungRx = between(rng, 0.11, 0.15);
  const lungRy = between(rng, 0.22, 0.3);
  const lungGap = between(rng, 0.15, 0.19);
  const lungCy = cy - between(rng, 0.03, 0.08);
  return {
    body: { cx, cy, rx: between(rng, 0.36, 0.44), ry: between(rng, 0.46, 0.56) },
    lungs: [
      { cx: cx - lungGap, cy: lungCy, rx: lungRx * between(rng, 0.95, 1.05), ry: lungRy },
      { cx: cx + lungGap, cy: lungCy, rx: lungRx * between(rng, 0.9, 1.0), ry: lungRy * between(rng, 0.93, 1.0) },
    ],
    heart: { cx: cx + between(rng, 0.04, 0.08), cy: lungCy + lungRy * 0.55, rx: between(rng, 0.11, 0.15), ry: between(rng, 0.09, 0.12) },
    spineX: cx,
    spineWidth: between(rng, 0.025, 0.04),
    ribSpacing: between(rng, 0.05, 0.07),
    ribCurvature: between(rng, 1.2, 2.2),
    ribPhase: rng(),
  };
}

function jitterEllipse(e: Ellipse, dx: number, dy: number, scale: number): Ellipse {
  return { cx: 0.5 + (e.cx - 0.5) * scale + dx, cy: 0.5 + (e.cy - 0.5) * scale + dy, rx: e.rx * scale, ry: e.ry * scale };
}

/** A point inside one of the lung ellipses, kept away from the edge. */
function pointInLung(lung: Ellipse, rng: Rng): { x: number; y: number } {
  const angle = rng() * 2 * Math.PI;
  const r = Math.sqrt(rng()) * 0.75;
  return { x: lung.cx + Math.cos(angle) * r * lung.rx, y: lung.cy + Math.sin(angle) * r * lung.ry };
}

/**
 * One image's parameters: the patient's anatomy, moved/scaled a little (positioning differs between
 * films), with its own exposure and, for PNEUMONIA, opacities in the lung fields.
 */
export function sampleXrayParams(label: Label, rng: Rng, anatomy: Anatomy = sampleAnatomy(rng)): XrayParams {
  const dx = between(rng, -0.03, 0.03);
  const dy = between(rng, -0.03, 0.03);
  const scale = between(rng, 0.93, 1.07);
  const lungs: [Ellipse, Ellipse] = [
    jitterEllipse(anatomy.lungs[0], dx, dy, scale),
    jitterEllipse(anatomy.lungs[1], dx, dy, scale),
  ];
  const opacities: Opacity[] = [];
  // Vessel markings in every film: faint, small, so "any bright spot" is not the answer.
  const vessels = 2 + Math.floor(rng() * 4);
  for (let i = 0; i < vessels; i++) {
    const p = pointInLung(lungs[Math.floor(rng() * 2)], rng);
    opacities.push({ cx: p.x, cy: p.y, radius: between(rng, 0.01, 0.025), strength: between(rng, 0.04, 0.12) });
  }
  let diffuseHaze = 0;
  if (label === 'PNEUMONIA') {
    const patches = 1 + Math.floor(rng() * 4);
    for (let i = 0; i < patches; i++) {
      const p = pointInLung(lungs[Math.floor(rng() * 2)], rng);
      opacities.push({ cx: p.x, cy: p.y, radius: between(rng, 0.035, 0.09), strength: between(rng, 0.1, 0.32) });
    }
    diffuseHaze = rng() < 0.5 ? between(rng, 0.03, 0.12) : 0;
  }
  return {
    ...anatomy,
    label,
    body: jitterEllipse(anatomy.body, dx, dy, scale),
    lungs,
    heart: jitterEllipse(anatomy.heart, dx, dy, scale),
    spineX: 0.5 + (anatomy.spineX - 0.5) * scale + dx,
    spineWidth: anatomy.spineWidth * scale,
    ribSpacing: anatomy.ribSpacing * scale,
    opacities,
    diffuseHaze,
    brightness: between(rng, -0.06, 0.06),
    contrast: between(rng, 0.85, 1.2),
    gamma: between(rng, 0.85, 1.2),
    noiseLevel: between(rng, 0.015, 0.04),
    textureSeed: Math.floor(rng() * 0xffffffff),
  };
}

/** 1 well inside the ellipse, 0 outside, with a soft edge about `edge` wide (in ellipse radii). */
function softEllipse(e: Ellipse, u: number, v: number, edge: number): number {
  const dx = (u - e.cx) / e.rx;
  const dy = (v - e.cy) / e.ry;
  const t = (1 - Math.sqrt(dx * dx + dy * dy)) / edge + 0.5;
  if (t <= 0) return 0;
  if (t >= 1) return 1;
  return t * t * (3 - 2 * t);
}

/** Smooth random field in 0..1 (bilinear value noise); makes opacities patchy instead of round. */
function valueNoise(rng: Rng, cells: number): (u: number, v: number) => number {
  const n = cells + 1;
  const grid = new Float32Array(n * n);
  for (let i = 0; i < grid.length; i++) grid[i] = rng();
  return (u, v) => {
    const x = Math.min(Math.max(u, 0), 0.9999) * cells;
    const y = Math.min(Math.max(v, 0), 0.9999) * cells;
    const x0 = Math.floor(x);
    const y0 = Math.floor(y);
    const fx = x - x0;
    const fy = y - y0;
    const a = grid[y0 * n + x0] + (grid[y0 * n + x0 + 1] - grid[y0 * n + x0]) * fx;
    const b = grid[(y0 + 1) * n + x0] + (grid[(y0 + 1) * n + x0 + 1] - grid[(y0 + 1) * n + x0]) * fx;
    return a + (b - a) * fy;
  };
}

/** How much of the pixel is lung field (air), after the heart shadow covers part of the left lung. */
function lungAmount(p: XrayParams, u: number, v: number): number {
  const lung = Math.max(softEllipse(p.lungs[0], u, v, 0.15), softEllipse(p.lungs[1], u, v, 0.15));
  return lung * (1 - 0.85 * softEllipse(p.heart, u, v, 0.3));
}

/** Renders one synthetic radiograph: row-major `size x size` grayscale, 0..255. Pure and deterministic. */
export function renderSyntheticXray(p: XrayParams, size: number): Uint8Array {
  if (!Number.isInteger(size) || size < 16) throw new Error(`image size must be an integer >= 16, got ${size}`);
  const out = new Uint8Array(size * size);
  const rng = makeRng(p.textureSeed);
  const patchiness = valueNoise(rng, 12);
  const fineTexture = valueNoise(rng, 40);
  // Ribs fade out just below the lung bases, where the abdomen starts.
  const ribEnd = Math.max(p.lungs[0].cy + p.lungs[0].ry, p.lungs[1].cy + p.lungs[1].ry);
  // The spine profile depends on x only.
  const spineProfile = new Float64Array(size);
  for (let x = 0; x < size; x++) spineProfile[x] = Math.exp(-((((x + 0.5) / size - p.spineX) / p.spineWidth) ** 2));
  for (let y = 0; y < size; y++) {
    const v = (y + 0.5) / size;
    const belowLungs = Math.min(Math.max((ribEnd - v) / 0.08, 0), 1);
    for (let x = 0; x < size; x++) {
      const u = (x + 0.5) / size;
      const body = softEllipse(p.body, u, v, 0.08);
      const heart = softEllipse(p.heart, u, v, 0.4);
      const lung = lungAmount(p, u, v);
      let value = 0.04 + 0.46 * body - 0.27 * lung + 0.15 * heart;

      if (body > 0) {
        // Ribs: arcs bending down away from the spine, clearer over the dark lungs.
        const side = u - p.spineX;
        const ribBand = Math.cos(2 * Math.PI * ((v - p.ribCurvature * side * side) / p.ribSpacing + p.ribPhase));
        const rib = ribBand > 0.55 ? (ribBand - 0.55) / 0.45 : 0;
        value += rib * body * belowLungs * (0.04 + 0.1 * lung) + 0.28 * spineProfile[x] * body;
      }

      // Opacities only show where there is air around them, i.e. inside the lung fields.
      if (lung > 0) {
        let opacity = p.diffuseHaze * (0.5 + patchiness(u, v));
        for (const o of p.opacities) {
          const d2 = (u - o.cx) ** 2 + (v - o.cy) ** 2;
          if (d2 < 9 * o.radius * o.radius) opacity += o.strength * Math.exp(-d2 / (2 * o.radius * o.radius));
        }
        value += opacity * lung * (0.6 + 0.8 * patchiness(u + 0.37, v + 0.11)) * (0.85 + 0.3 * fineTexture(u, v));
      }

      value = p.brightness + p.contrast * (value - 0.3) + 0.3;
      value = Math.max(value, 0) ** p.gamma;
      value += p.noiseLevel * (rng() + rng() + rng() - 1.5);
      out[y * size + x] = Math.round(Math.min(Math.max(value, 0), 1) * 255);
    }
  }
  return out;
}

/** Which pixels are mostly lung field (1) and which not (0): for tests and for explaining the picture. */
export function lungFieldMask(p: XrayParams, size: number): Uint8Array {
  const mask = new Uint8Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) mask[y * size + x] = lungAmount(p, (x + 0.5) / size, (y + 0.5) / size) > 0.5 ? 1 : 0;
  }
  return mask;
}

/** One synthetic image from a label and a seed, without touching the disk. */
export function syntheticXray(label: Label, seed: number, size = DEMO_DEFAULTS.size): Uint8Array {
  return renderSyntheticXray(sampleXrayParams(label, makeRng(seed)), size);
}

/** A planned file: where it goes and how to draw it. */
export interface DemoImagePlan {
  split: (typeof SPLITS)[number];
  label: Label;
  patient: string;
  file: string;
  params: XrayParams;
}

/**
 * Groups images into synthetic patients of 1-3 films each, so patient-level splitting has something
 * to do. Patient numbers are unique across splits and classes.
 */
export function planDemoDataset(opts: { perClass: number; testPerClass: number; seed: number }): DemoImagePlan[] {
  const plan: DemoImagePlan[] = [];
  let patientNumber = 0;
  SPLITS.forEach((split, splitIndex) => {
    const perClass = split === 'train' ? opts.perClass : opts.testPerClass;
    LABELS.forEach((label, labelIndex) => {
      let made = 0;
      while (made < perClass) {
        patientNumber += 1;
        const rng = makeRng(deriveSeed(opts.seed, splitIndex, labelIndex, patientNumber));
        const anatomy = sampleAnatomy(rng);
        const films = Math.min(1 + Math.floor(rng() * 3), perClass - made);
        const patient = `synthetic-p${String(patientNumber).padStart(4, '0')}`;
        for (let film = 1; film <= films; film++) {
          plan.push({ split, label, patient, file: `${patient}-${film}.jpeg`, params: sampleXrayParams(label, rng, anatomy) });
        }
        made += films;
      }
    });
  });
  return plan;
}

export async function encodeGrayJpeg(pixels: Uint8Array, size: number): Promise<Buffer> {
  return sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), {
    raw: { width: size, height: size, channels: 1 },
  })
    .toColourspace('b-w')
    // Labels each file itself, so a copy taken out of the folder still says what it is.
    .withExif({ IFD0: { ImageDescription: 'SYNTHETIC image, not a radiograph (pneumonia-xray demo data)' } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

function readmeText(opts: Required<Omit<DemoOptions, 'outDir'>>, counts: Record<string, number>): string {
  return [
    `${README_MARKER}`,
    '',
    DEMO_DISCLAIMER,
    '',
    'Generated by `npm run data:demo` (src/data/demo.ts) to exercise the pipeline without the real dataset.',
    `Settings: perClass=${opts.perClass} testPerClass=${opts.testPerClass} size=${opts.size} seed=${opts.seed}`,
    'Layout mirrors the Kaggle "Chest X-Ray Images (Pneumonia)" folders: {train,test}/{NORMAL,PNEUMONIA}/*.jpeg',
    'File names encode a synthetic patient id: synthetic-p0012-1.jpeg is image 1 of patient synthetic-p0012.',
    '',
    'Counts:',
    ...Object.entries(counts).map(([key, n]) => `  ${key}: ${n}`),
    '',
  ].join('\n');
}

async function pathExists(p: string): Promise<boolean> {
  return fs.access(p).then(() => true, () => false);
}

/** Only an empty folder or one we generated earlier may be replaced; anything else could be real data. */
async function assertReplaceable(outDir: string): Promise<void> {
  if (!(await pathExists(outDir))) return;
  const entries = await fs.readdir(outDir);
  if (entries.length === 0) return;
  const readme = await fs.readFile(path.join(outDir, README_NAME), 'utf8').catch(() => '');
  if (!readme.startsWith(README_MARKER)) {
    throw new Error(
      `${outDir} already exists and is not a synthetic demo dataset made by this project; ` +
        'choose another --out folder or remove it yourself.',
    );
  }
}

/** Swaps `staging` into `target`; the old folder is moved aside first so `target` is never half-written. */
async function replaceDirectory(staging: string, target: string): Promise<void> {
  if (!(await pathExists(target))) {
    await fs.rename(staging, target);
    return;
  }
  const old = `${staging}.old`;
  await fs.rename(target, old);
  await fs.rename(staging, target);
  await fs.rm(old, { recursive: true, force: true });
}

function positiveInt(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

/**
 * Writes the demo dataset in the Kaggle layout. Builds it in a temporary sibling folder and renames it
 * into place, so an interrupted run never leaves half a dataset at `outDir`.
 */
export async function generateDemoDataset(opts: DemoOptions): Promise<DemoResult> {
  const settings = {
    perClass: positiveInt('perClass', opts.perClass ?? DEMO_DEFAULTS.perClass, 1),
    testPerClass: positiveInt('testPerClass', opts.testPerClass ?? DEMO_DEFAULTS.testPerClass, 0),
    size: positiveInt('size', opts.size ?? DEMO_DEFAULTS.size, 16),
    seed: opts.seed ?? DEMO_DEFAULTS.seed,
  };
  const root = path.resolve(opts.outDir);
  await assertReplaceable(root);
  await fs.mkdir(path.dirname(root), { recursive: true });
  const staging = await fs.mkdtemp(path.join(path.dirname(root), `.${path.basename(root)}.demo-`));
  try {
    const plan = planDemoDataset(settings);
    const counts: Record<string, number> = {};
    for (const split of SPLITS) {
      for (const label of LABELS) {
        counts[`${split}/${label}`] = 0;
        await fs.mkdir(path.join(staging, split, label), { recursive: true });
      }
    }
    // Small batches keep sharp's thread pool busy without holding every image in memory.
    const batchSize = 8;
    for (let i = 0; i < plan.length; i += batchSize) {
      await Promise.all(
        plan.slice(i, i + batchSize).map(async (item) => {
          const jpeg = await encodeGrayJpeg(renderSyntheticXray(item.params, settings.size), settings.size);
          await fs.writeFile(path.join(staging, item.split, item.label, item.file), jpeg);
        }),
      );
    }
    for (const item of plan) counts[`${item.split}/${item.label}`] += 1;
    await fs.writeFile(path.join(staging, README_NAME), readmeText(settings, counts));
    await replaceDirectory(staging, root);
    return { root, counts };
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    throw err;
  }
}
