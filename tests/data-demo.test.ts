import { execFile } from 'child_process';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import sharp from 'sharp';
import { compiledCli } from './compiled-cli';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEMO_DISCLAIMER,
  generateDemoDataset,
  lungFieldMask,
  planDemoDataset,
  renderSyntheticXray,
  sampleXrayParams,
  syntheticXray,
} from '../src/data/demo';
import { main as dataDemoMain } from '../src/cli/data-demo';
import { deriveSeed } from '../src/random';
import { discoverDataset } from '../src/data/discover';
import { makeRng } from '../src/random';
import type { Label } from '../src/types';

const run = promisify(execFile);
const repoRoot = path.resolve(__dirname, '..');
const SMALL = { perClass: 7, testPerClass: 3, size: 64, seed: 11 };

let workDir: string;

beforeAll(async () => {
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'data-demo-test-'));
});

afterAll(async () => {
  await fs.rm(workDir, { recursive: true, force: true });
});

/** Relative path -> bytes for every file under `dir`. */
async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const files = (await fs.readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
  const out = new Map<string, Buffer>();
  for (const f of files) {
    const full = path.join(f.parentPath, f.name);
    out.set(path.relative(dir, full).split(path.sep).join('/'), await fs.readFile(full));
  }
  return out;
}

function patientOf(file: string): string {
  return file.replace(/\.jpeg$/, '').replace(/[-_]?\d+$/, '');
}

describe('rendering one image', () => {
  it('is a pure function of label and seed', () => {
    const a = syntheticXray('PNEUMONIA', 5, 48);
    expect(a).toHaveLength(48 * 48);
    expect(syntheticXray('PNEUMONIA', 5, 48)).toEqual(a);
    expect(syntheticXray('PNEUMONIA', 6, 48)).not.toEqual(a);
  });

  it('looks like a film: dark corners, darker lungs than the body around them, some contrast', () => {
    const params = sampleXrayParams('NORMAL', makeRng(3));
    const size = 96;
    const px = renderSyntheticXray(params, size);
    const mask = lungFieldMask(params, size);
    const corner = (px[0] + px[size - 1] + px[size * (size - 1)] + px[size * size - 1]) / 4;
    let lung = 0;
    let lungN = 0;
    for (let i = 0; i < px.length; i++) {
      if (!mask[i]) continue;
      lung += px[i];
      lungN++;
    }
    // The spine column at mid-height, a bright structure between the lungs.
    const spine = px[Math.round(size * 0.5) * size + Math.round(params.spineX * size - 0.5)];
    expect(lungN).toBeGreaterThan(size * size * 0.08);
    expect(corner).toBeLessThan(40);
    expect(lung / lungN).toBeGreaterThan(corner);
    expect(spine).toBeGreaterThan(lung / lungN + 30);
  });

  it('makes the classes differ measurably in the lung fields, without a perfect one-number split', () => {
    const size = 64;
    const lungMeans = (label: Label) =>
      Array.from({ length: 60 }, (_, i) => {
        const params = sampleXrayParams(label, makeRng(deriveSeed(99, i, label.length)));
        const px = renderSyntheticXray(params, size);
        const mask = lungFieldMask(params, size);
        let sum = 0;
        let n = 0;
        for (let k = 0; k < px.length; k++) {
          if (!mask[k]) continue;
          sum += px[k];
          n++;
        }
        return sum / n;
      });
    const normal = lungMeans('NORMAL');
    const pneumonia = lungMeans('PNEUMONIA');
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(pneumonia) - mean(normal)).toBeGreaterThan(10);
    // Learnable but not trivial: the best threshold on this one statistic still makes mistakes.
    let bestAccuracy = 0;
    for (const t of [...normal, ...pneumonia]) {
      const correct = normal.filter((v) => v <= t).length + pneumonia.filter((v) => v > t).length;
      bestAccuracy = Math.max(bestAccuracy, correct / (normal.length + pneumonia.length));
    }
    expect(bestAccuracy).toBeGreaterThan(0.6);
    expect(bestAccuracy).toBeLessThan(0.97);
  });

  it('rejects a size too small to draw', () => {
    expect(() => syntheticXray('NORMAL', 1, 8)).toThrow(/size/);
  });
});

describe('planDemoDataset', () => {
  const plan = planDemoDataset({ perClass: 20, testPerClass: 6, seed: 1 });

  it('has exact counts per split and class', () => {
    const count = (split: string, label: string) => plan.filter((p) => p.split === split && p.label === label).length;
    expect([count('train', 'NORMAL'), count('train', 'PNEUMONIA'), count('test', 'NORMAL'), count('test', 'PNEUMONIA')]).toEqual([
      20, 20, 6, 6,
    ]);
  });

  it('gives every patient 1-3 images, one class and one split, with ids parsed from the file name', () => {
    const byPatient = new Map<string, Set<string>>();
    for (const item of plan) {
      expect(item.file).toMatch(/^synthetic-p\d{4}-[1-3]\.jpeg$/);
      expect(patientOf(item.file)).toBe(item.patient);
      const where = byPatient.get(item.patient) ?? new Set<string>();
      where.add(`${item.split}/${item.label}`);
      byPatient.set(item.patient, where);
    }
    for (const where of byPatient.values()) expect(where.size).toBe(1);
    const sizes = [...byPatient.keys()].map((p) => plan.filter((i) => i.patient === p).length);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(3);
    expect(sizes.some((n) => n > 1)).toBe(true);
    expect(new Set(plan.map((i) => `${i.split}/${i.label}/${i.file}`)).size).toBe(plan.length);
  });
});

describe('generateDemoDataset', () => {
  it('writes the Kaggle layout with exact counts, a README and decodable grayscale JPEGs', async () => {
    const parent = path.join(workDir, 'layout');
    const outDir = path.join(parent, 'demo');
    const result = await generateDemoDataset({ outDir, ...SMALL });
    expect(result.root).toBe(outDir);
    expect(result.counts).toEqual({ 'train/NORMAL': 7, 'train/PNEUMONIA': 7, 'test/NORMAL': 3, 'test/PNEUMONIA': 3 });
    expect((await fs.readdir(outDir)).sort()).toEqual(['README.txt', 'test', 'train']);
    for (const [key, n] of Object.entries(result.counts)) {
      const files = await fs.readdir(path.join(outDir, key));
      expect(files).toHaveLength(n);
      expect(files.every((f) => /^synthetic-p\d{4}-\d\.jpeg$/.test(f))).toBe(true);
    }
    const readme = await fs.readFile(path.join(outDir, 'README.txt'), 'utf8');
    expect(readme).toContain('SYNTHETIC');
    expect(readme).toContain('not radiographs');
    const sample = path.join(outDir, 'train', 'PNEUMONIA', (await fs.readdir(path.join(outDir, 'train', 'PNEUMONIA')))[0]);
    const meta = await sharp(sample).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['jpeg', 64, 64, 1]);
    expect(meta.exif?.includes('SYNTHETIC image, not a radiograph')).toBe(true);
    const { data, info } = await sharp(sample).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(1);
    expect(Math.max(...data) - Math.min(...data)).toBeGreaterThan(100);
    // Nothing but the dataset next to it: the staging folder was renamed, not left behind.
    expect(await fs.readdir(parent)).toEqual(['demo']);
  });

  it('is read back by dataset discovery with the planned labels and patient ids', async () => {
    const outDir = path.join(workDir, 'discover');
    await generateDemoDataset({ outDir, ...SMALL });
    const dataset = await discoverDataset(outDir);
    expect(dataset.sources).toEqual(['train', 'test']);
    expect(dataset.images).toHaveLength(20);
    const plan = planDemoDataset(SMALL);
    const expected = plan.map((p) => `${p.split}/${p.label}/${p.patient}/${p.file}`).sort();
    const found = dataset.images.map((r) => `${r.source}/${r.label}/${r.patient}/${path.basename(r.path)}`).sort();
    expect(found).toEqual(expected);
    // The README is the only thing not used, and it is reported rather than dropped silently.
    expect(dataset.skipped.map((s) => path.basename(s.path))).toEqual(['README.txt']);
  });

  it('is byte-for-byte reproducible from the seed, and differs for another seed', async () => {
    const a = path.join(workDir, 'seed-a');
    const b = path.join(workDir, 'seed-b');
    const c = path.join(workDir, 'seed-c');
    await generateDemoDataset({ outDir: a, ...SMALL });
    await generateDemoDataset({ outDir: b, ...SMALL });
    await generateDemoDataset({ outDir: c, ...SMALL, seed: SMALL.seed + 1 });
    const [sa, sb, sc] = await Promise.all([snapshot(a), snapshot(b), snapshot(c)]);
    expect([...sa.keys()].sort()).toEqual([...sb.keys()].sort());
    for (const [file, bytes] of sa) expect(bytes.equals(sb.get(file)!), file).toBe(true);
    const jpegs = [...sa.keys()].filter((f) => f.endsWith('.jpeg') && sc.has(f));
    expect(jpegs.some((f) => !sa.get(f)!.equals(sc.get(f)!))).toBe(true);
  });

  it('replaces its own earlier output but never a folder it did not make', async () => {
    const outDir = path.join(workDir, 'replace');
    await generateDemoDataset({ outDir, ...SMALL, perClass: 9 });
    const again = await generateDemoDataset({ outDir, ...SMALL });
    expect(again.counts['train/NORMAL']).toBe(7);
    expect(await fs.readdir(path.join(outDir, 'train', 'NORMAL'))).toHaveLength(7);

    const precious = path.join(workDir, 'precious');
    await fs.mkdir(precious);
    await fs.writeFile(path.join(precious, 'scan.jpeg'), 'real data');
    await expect(generateDemoDataset({ outDir: precious, ...SMALL })).rejects.toThrow(/not a synthetic demo dataset/);
    expect(await fs.readdir(precious)).toEqual(['scan.jpeg']);
  });

  it('rejects nonsense settings with a message naming the setting', async () => {
    await expect(generateDemoDataset({ outDir: path.join(workDir, 'bad'), perClass: 0 })).rejects.toThrow(/perClass/);
    await expect(generateDemoDataset({ outDir: path.join(workDir, 'bad'), size: 3.5 })).rejects.toThrow(/size/);
  });
});

describe('data:demo CLI', () => {
  it('writes the dataset and prints counts and the disclaimer', async () => {
    const outDir = path.join(workDir, 'cli');
    const out: string[] = [];
    const err: string[] = [];
    const code = await dataDemoMain(['--out', outDir, '--per-class', '4', '--test-per-class', '2', '--size', '32', '--seed', '3'], {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
    });
    expect(err).toEqual([]);
    expect(code).toBe(0);
    const text = out.join('\n');
    expect(text).toContain('Wrote 12 synthetic images');
    expect(text).toContain('train/PNEUMONIA: 4');
    expect(text).toContain(DEMO_DISCLAIMER);
    expect(await fs.readdir(path.join(outDir, 'test', 'NORMAL'))).toHaveLength(2);
  });

  it('rejects a bad flag with exit code 2 and says which', async () => {
    const err: string[] = [];
    const code = await dataDemoMain(['--per-class', 'many'], { out: () => undefined, err: (l) => err.push(l) });
    expect(code).toBe(2);
    expect(err.join('\n')).toMatch(/--per-class/);
  });

  it('runs as a compiled program', async () => {
    const program = await compiledCli(
      'data-demo',
      ['src/cli/data-demo.ts', 'src/cli/common.ts', 'src/data/demo.ts', 'src/random.ts', 'src/types.ts'],
      workDir,
    );
    const outDir = path.join(workDir, 'compiled');
    const { stdout } = await run(
      process.execPath,
      [program, '--out', outDir, '--per-class', '2', '--test-per-class', '1', '--size', '32'],
      { cwd: repoRoot, env: { ...process.env, NODE_PATH: path.join(repoRoot, 'node_modules') } },
    );
    expect(stdout).toContain('Wrote 6 synthetic images');
    expect(stdout).toContain('SYNTHETIC DATA');
    expect(await fs.readdir(path.join(outDir, 'train', 'PNEUMONIA'))).toHaveLength(2);
  });
});
