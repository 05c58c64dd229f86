import { describe, it, expect, afterAll } from 'vitest';
import { promises as fsp, existsSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Dataset, ImageRecord, Label, SourceSplit, Split } from '../src/types';
import { discoverDataset } from '../src/data/discover';
import { splitDataset, splitSummary, patientsShared, saveSplit, loadSplit } from '../src/data/split';

const repoRoot = path.resolve(__dirname, '..');
const sharedData = process.env.PNEUMO_SHARED_DATA ?? path.resolve(repoRoot, '../shared/data/chest_xray');
const hasShared = existsSync(path.join(sharedData, 'train'));

/** A synthetic dataset: patients with 1-4 images each, 1:3 NORMAL:PNEUMONIA like Kaggle. */
function synthetic(opts: { test?: boolean; val?: boolean; patients?: number } = {}): Dataset {
  const images: ImageRecord[] = [];
  const n = opts.patients ?? 600;
  const add = (source: SourceSplit, label: Label, patient: string, k: number) =>
    images.push({ path: `/d/${source}/${label}/${patient}_${k}.jpeg`, label, patient, source });
  for (let p = 0; p < n; p++) {
    const label: Label = p % 4 === 0 ? 'NORMAL' : 'PNEUMONIA';
    const count = 1 + (p % 4 === 1 ? 3 : p % 3);
    for (let k = 0; k < count; k++) add('train', label, `person${p}`, k);
  }
  if (opts.val) for (let p = 0; p < 8; p++) add('val', p % 2 ? 'NORMAL' : 'PNEUMONIA', `valpat${p}`, 0);
  if (opts.test) for (let p = 0; p < 40; p++) add('test', p % 3 ? 'PNEUMONIA' : 'NORMAL', `testpat${p}`, 0);
  const sources: SourceSplit[] = ['train'];
  if (opts.val) sources.push('val');
  if (opts.test) sources.push('test');
  return { root: '/d', images, skipped: [], sources };
}

function share(split: Split, name: 'train' | 'val' | 'test', label: Label): number {
  const all = [...split.train, ...split.val, ...split.test].filter((i) => i.source !== 'test' || split.testSource === 'carved');
  return split[name].filter((i) => i.label === label).length / all.filter((i) => i.label === label).length;
}

describe('splitDataset', () => {
  it('carves test and val when there is no test/, stratified within tolerance, no patient shared', () => {
    const ds = synthetic();
    const split = splitDataset(ds, { seed: 1 });
    expect(split.testSource).toBe('carved');
    expect(split.seed).toBe(1);
    expect(split.train.length + split.val.length + split.test.length).toBe(ds.images.length);
    for (const label of ['NORMAL', 'PNEUMONIA'] as const) {
      expect(share(split, 'val', label)).toBeGreaterThan(0.1 - 0.01);
      expect(share(split, 'val', label)).toBeLessThan(0.1 + 0.01);
      expect(share(split, 'test', label)).toBeGreaterThan(0.15 - 0.01);
      expect(share(split, 'test', label)).toBeLessThan(0.15 + 0.01);
    }
    expect(patientsShared(split)).toEqual([]);
  });

  it('is reproducible per seed and differs between seeds', () => {
    const ds = synthetic();
    const paths = (s: Split) => s.val.map((i) => i.path).join();
    expect(paths(splitDataset(ds, { seed: 7 }))).toBe(paths(splitDataset(ds, { seed: 7 })));
    expect(paths(splitDataset(ds, { seed: 7 }))).not.toBe(paths(splitDataset(ds, { seed: 8 })));
    // Input order must not matter either: only the set of patients and the seed.
    const reversed = { ...ds, images: ds.images.slice().reverse() };
    expect(new Set(splitDataset(reversed, { seed: 7 }).val.map((i) => i.path))).toEqual(
      new Set(splitDataset(ds, { seed: 7 }).val.map((i) => i.path)),
    );
  });

  it('keeps the official test set untouched and pools val/ into train before splitting', () => {
    const ds = synthetic({ test: true, val: true });
    const split = splitDataset(ds, { seed: 3, valFraction: 0.2 });
    expect(split.testSource).toBe('official');
    expect(split.test).toEqual(ds.images.filter((i) => i.source === 'test'));
    const pooled = [...split.train, ...split.val];
    expect(pooled.every((i) => i.source !== 'test')).toBe(true);
    expect(pooled.filter((i) => i.source === 'val')).toHaveLength(8);
    expect(pooled).toHaveLength(ds.images.length - 40);
    const valShare = split.val.length / pooled.length;
    expect(valShare).toBeGreaterThan(0.19);
    expect(valShare).toBeLessThan(0.21);
    expect(patientsShared(split)).toEqual([]);
  });

  it('never splits a patient, even one with both labels', () => {
    const ds = synthetic({ patients: 40 });
    ds.images.push({ path: '/d/train/NORMAL/person5_x.jpeg', label: 'NORMAL', patient: 'person5', source: 'train' });
    for (let seed = 0; seed < 20; seed++) expect(patientsShared(splitDataset(ds, { seed }))).toEqual([]);
  });

  it('patientsShared reports a leak', () => {
    const split = splitDataset(synthetic({ patients: 40 }), { seed: 1 });
    const leaked = { ...split, val: [...split.val, { ...split.train[0] }] };
    expect(patientsShared(leaked)).toEqual([split.train[0].patient]);
  });

  it('rejects impossible fractions', () => {
    expect(() => splitDataset(synthetic(), { valFraction: 1.5 })).toThrow(RangeError);
    expect(() => splitDataset(synthetic(), { valFraction: 0.5, testFraction: 0.5 })).toThrow(/below 1/);
  });

  it('summarises images and patients per split and label', () => {
    const split = splitDataset(synthetic({ test: true }), { seed: 2 });
    const rows = splitSummary(split);
    expect(rows).toHaveLength(6);
    expect(rows.reduce((s, r) => s + r.images, 0)).toBe(split.train.length + split.val.length + split.test.length);
    const testNormal = rows.find((r) => r.split === 'test' && r.label === 'NORMAL')!;
    expect(testNormal.images).toBe(split.test.filter((i) => i.label === 'NORMAL').length);
    expect(testNormal.patients).toBe(testNormal.images); // one image per synthetic test patient
  });
});

describe('saveSplit/loadSplit', () => {
  const tmp = path.join(os.tmpdir(), `split-${process.pid}`);
  afterAll(() => fsp.rm(tmp, { recursive: true, force: true }));

  it('round-trips and leaves no temp file', async () => {
    const split = splitDataset(synthetic({ test: true }), { seed: 5 });
    const file = path.join(tmp, 'sub', 'split.json');
    await saveSplit(split, file);
    expect(await loadSplit(file)).toEqual(split);
    expect(await fsp.readdir(path.dirname(file))).toEqual(['split.json']);
  });

  it('a missing or malformed file is a clear error naming it', async () => {
    await expect(loadSplit(path.join(tmp, 'none.json'))).rejects.toThrow(/Cannot read split file .*none.json/);
    const bad = path.join(tmp, 'bad.json');
    await fsp.mkdir(tmp, { recursive: true });
    await fsp.writeFile(bad, JSON.stringify({ format: 'pneumonia-split', version: 1, seed: 1, train: [{}] }));
    await expect(loadSplit(bad)).rejects.toThrow(/bad.json is not a valid split/);
  });
});

describe.skipIf(!hasShared)(`shared data at ${sharedData}`, () => {
  it('splits 1341/3875 with zero shared patients', async () => {
    const ds = await discoverDataset(sharedData);
    const split = splitDataset(ds);
    const rows = splitSummary(split);
    console.table(rows);
    const count = (label: Label) => rows.filter((r) => r.label === label).reduce((s, r) => s + r.images, 0);
    expect(count('NORMAL')).toBe(1341);
    expect(count('PNEUMONIA')).toBe(3875);
    expect(split.testSource).toBe(ds.sources.includes('test') ? 'official' : 'carved');
    expect(patientsShared(split)).toEqual([]);
    for (const r of rows) expect(r.images).toBeGreaterThan(0);
  });
});
