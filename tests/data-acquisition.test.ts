import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { acquisitionKey, earliestPatients, holdOutEarliest } from '../src/data/acquisition';
import { patientId } from '../src/data/discover';

const SHARED_TRAIN = path.resolve(__dirname, '..', '..', 'shared', 'data', 'chest_xray', 'train');

describe('acquisitionKey', () => {
  it('reads the series and patient number of the three Kaggle naming schemes', () => {
    expect(acquisitionKey('IM-0115-0001.jpeg')).toEqual({ series: 'IM', number: 115 });
    expect(acquisitionKey('/x/NORMAL/NORMAL2-IM-0383-0001.jpeg')).toEqual({ series: 'NORMAL2-IM', number: 383 });
    expect(acquisitionKey('person12_virus_45.jpeg')).toEqual({ series: 'person', number: 12 });
    expect(acquisitionKey('person1000_bacteria_2931.jpeg')).toEqual({ series: 'person', number: 1000 });
    expect(acquisitionKey('scan.png')).toBeNull();
    expect(acquisitionKey('.DS_Store')).toBeNull();
  });
});

describe('earliestPatients', () => {
  const patients = [
    { id: 'IM-0120', fileName: 'IM-0120-0001.jpeg', images: 1 },
    { id: 'IM-0115', fileName: 'IM-0115-0001.jpeg', images: 2 },
    { id: 'IM-0130', fileName: 'IM-0130-0001.jpeg', images: 1 },
    { id: 'IM-0125', fileName: 'IM-0125-0001.jpeg', images: 1 },
    { id: 'NORMAL2-IM-0500', fileName: 'NORMAL2-IM-0500-0001.jpeg', images: 1 },
    { id: 'NORMAL2-IM-0400', fileName: 'NORMAL2-IM-0400-0001.jpeg', images: 1 },
    { id: 'scan', fileName: 'scan.png', images: 5 },
  ];

  it('takes the lowest numbers of every series, whole patients, about the fraction of its images', () => {
    // IM holds 5 images: 40% is 2, the 2 images of IM-0115; NORMAL2-IM holds 2: 40% rounds to 1, NORMAL2-IM-0400.
    expect([...earliestPatients(patients, 0.4)].sort()).toEqual(['IM-0115', 'NORMAL2-IM-0400']);
    expect([...earliestPatients(patients, 0.6)].sort()).toEqual(['IM-0115', 'IM-0120', 'NORMAL2-IM-0400']);
    expect(earliestPatients(patients, 0).size).toBe(0);
  });

  it('never holds out a patient without an acquisition number, and rejects a fraction outside [0, 1)', () => {
    expect(earliestPatients(patients, 0.9).has('scan')).toBe(false);
    expect(() => earliestPatients(patients, 1)).toThrow(/\[0, 1\)/);
  });

  it.skipIf(!fs.existsSync(SHARED_TRAIN))(
    'on the shared NORMAL films: every held-out film is earlier than every kept one of its series',
    () => {
      const files = fs.readdirSync(path.join(SHARED_TRAIN, 'NORMAL')).filter((f) => f.endsWith('.jpeg'));
      const byPatient = new Map<string, string[]>();
      for (const f of files) byPatient.set(patientId(f), [...(byPatient.get(patientId(f)) ?? []), f]);
      const held = earliestPatients(
        [...byPatient].map(([id, fs]) => ({ id, fileName: fs[0], images: fs.length })),
        0.15,
      );
      for (const series of ['IM', 'NORMAL2-IM']) {
        const numbers = (heldOut: boolean) =>
          files
            .filter((f) => acquisitionKey(f)!.series === series && held.has(patientId(f)) === heldOut)
            .map((f) => acquisitionKey(f)!.number);
        const [heldNumbers, keptNumbers] = [numbers(true), numbers(false)];
        expect(heldNumbers.length / (heldNumbers.length + keptNumbers.length)).toBeCloseTo(0.15, 1);
        expect(Math.max(...heldNumbers)).toBeLessThan(Math.min(...keptNumbers));
      }
    },
  );
});

describe('holdOutEarliest', () => {
  it('moves whole early patients of each series and keeps every image exactly once', () => {
    const rec = (file: string, patient: string, label: 'NORMAL' | 'PNEUMONIA') => ({
      path: `/d/train/${label}/${file}`,
      label,
      patient,
      source: 'train' as const,
    });
    const images = [
      rec('IM-0200-0001.jpeg', 'IM-0200', 'NORMAL'),
      rec('IM-0100-0001.jpeg', 'IM-0100', 'NORMAL'),
      rec('IM-0100-0002.jpeg', 'IM-0100', 'NORMAL'),
      rec('IM-0300-0001.jpeg', 'IM-0300', 'NORMAL'),
      rec('person9_virus_1.jpeg', 'person9', 'PNEUMONIA'),
      rec('person2_bacteria_7.jpeg', 'person2', 'PNEUMONIA'),
      rec('person5_bacteria_9.jpeg', 'person5', 'PNEUMONIA'),
      rec('person7_virus_3.jpeg', 'person7', 'PNEUMONIA'),
    ];
    const { held, rest } = holdOutEarliest(images, 0.5);
    expect(held.map((i) => i.patient).sort()).toEqual(['IM-0100', 'IM-0100', 'person2', 'person5']);
    expect([...held, ...rest].map((i) => i.path).sort()).toEqual(images.map((i) => i.path).sort());
  });
});

describe('splitDataset with an out-of-time validation part', () => {
  it('holds out the earliest patients first, leaks no patient, and survives saveSplit/loadSplit', async () => {
    const { splitDataset, saveSplit, loadSplit, patientsShared } = await import('../src/data/split');
    const images = [
      ...Array.from({ length: 40 }, (_, i) => ({ file: `IM-${String(100 + i).padStart(4, '0')}-0001.jpeg`, label: 'NORMAL' as const })),
      ...Array.from({ length: 60 }, (_, i) => ({ file: `person${i + 1}_bacteria_${i}.jpeg`, label: 'PNEUMONIA' as const })),
    ].map(({ file, label }) => ({ path: `/d/train/${label}/${file}`, label, patient: patientId(file), source: 'train' as const }));
    const ds = { root: '/d', images, skipped: [], sources: ['train' as const] };
    const split = splitDataset(ds, { seed: 1, valFraction: 0.1, testFraction: 0.15, valTimeFraction: 0.2 });
    const held = split.valTime!;
    expect(held.filter((r) => r.label === 'NORMAL').map((r) => r.patient)).toEqual([
      'IM-0100',
      'IM-0101',
      'IM-0102',
      'IM-0103',
      'IM-0104',
      'IM-0105',
      'IM-0106',
      'IM-0107',
    ]);
    expect(held.filter((r) => r.label === 'PNEUMONIA')).toHaveLength(12);
    expect(patientsShared(split)).toEqual([]);
    expect(split.train.length + split.val.length + split.test.length + held.length).toBe(100);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'split-')), 'split.json');
    await saveSplit(split, file);
    expect((await loadSplit(file)).valTime).toEqual(held);
    expect(splitDataset(ds, { seed: 1 }).valTime).toBeUndefined();
  });
});
