/**
 * Patient-grouped, label-stratified, seeded train/val/test split.
 *
 * - The official test/ folder, when present, is the test set as is (testSource 'official').
 * - train/ and val/ images are pooled; validation is split off the pool (the Kaggle val/ has only 16 images).
 * - Without test/, a test set is carved from the pool the same way (testSource 'carved').
 * - Fractions are of the pooled train+val images, per label (stratified), and are met as closely as whole
 *   patients allow: a patient's images never straddle splits. A patient with images of both labels is
 *   stratified by its majority label (ties: the label of its first image).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { LABELS, type Dataset, type ImageRecord, type Label, type Split, type SplitName } from '../types';
import { makeRng, shuffled, type Rng } from '../random';
import { holdOutEarliest } from './acquisition';

export interface SplitOptions {
  /** Seed of the patient shuffle; default 42. */
  seed?: number;
  /** Share of the pooled train+val images that goes to validation; default 0.1. */
  valFraction?: number;
  /** Share carved for test when the dataset has no test/ folder; default 0.15. */
  testFraction?: number;
  /**
   * Share of each acquisition series' images, its earliest patients, held out first as the out-of-time validation
   * split (`Split.valTime`); default 0 (none).
   */
  valTimeFraction?: number;
}

export interface SplitSummaryRow {
  split: SplitName;
  label: Label;
  images: number;
  patients: number;
}

export const SPLIT_NAMES: readonly SplitName[] = ['train', 'val', 'test'];

interface PatientGroup {
  id: string;
  label: Label;
  images: ImageRecord[];
}

function checkFraction(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0 || value >= 1) {
    throw new RangeError(`${name} must be a number in [0, 1), got ${value}`);
  }
}

function majorityLabel(images: ImageRecord[]): Label {
  const counts = new Map<Label, number>();
  for (const img of images) counts.set(img.label, (counts.get(img.label) ?? 0) + 1);
  let best = images[0].label;
  for (const label of LABELS) {
    if ((counts.get(label) ?? 0) > (counts.get(best) ?? 0)) best = label;
  }
  return best;
}

/** Patients in order of first appearance, so grouping is deterministic for a deterministic input. */
function groupByPatient(images: ImageRecord[]): PatientGroup[] {
  const byId = new Map<string, ImageRecord[]>();
  for (const img of images) {
    const list = byId.get(img.patient);
    if (list) list.push(img);
    else byId.set(img.patient, [img]);
  }
  return [...byId.entries()].map(([id, imgs]) => ({ id, label: majorityLabel(imgs), images: imgs }));
}

/**
 * Takes whole patients, in shuffled order, while doing so brings the image count closer to the target.
 * Scanning past a too-large patient lets smaller ones fill the gap, so the result tracks the target closely.
 */
function takePatients(groups: PatientGroup[], target: number): { taken: PatientGroup[]; rest: PatientGroup[] } {
  const taken: PatientGroup[] = [];
  const rest: PatientGroup[] = [];
  let count = 0;
  for (const g of groups) {
    const n = g.images.length;
    if (count < target && Math.abs(count + n - target) < Math.abs(count - target)) {
      taken.push(g);
      count += n;
    } else {
      rest.push(g);
    }
  }
  return { taken, rest };
}

/** Splits one label stratum of patients into parts of the requested image counts, in order. */
function carveStratum(groups: PatientGroup[], rng: Rng, fractions: number[]): PatientGroup[][] {
  const total = groups.reduce((s, g) => s + g.images.length, 0);
  let remaining = shuffled(groups, rng);
  const parts: PatientGroup[][] = [];
  for (const fraction of fractions) {
    const { taken, rest } = takePatients(remaining, Math.round(fraction * total));
    parts.push(taken);
    remaining = rest;
  }
  parts.push(remaining);
  return parts;
}

function flatten(groups: PatientGroup[]): ImageRecord[] {
  return groups.flatMap((g) => g.images);
}

/** Keeps the discovery order (source, label, file name) inside every split, whatever the shuffle did. */
function inOriginalOrder(images: ImageRecord[], order: Map<ImageRecord, number>): ImageRecord[] {
  return images.slice().sort((a, b) => order.get(a)! - order.get(b)!);
}

/** Seeded, stratified, patient-grouped split; see the module comment for the rules. */
export function splitDataset(ds: Dataset, opts: SplitOptions = {}): Split {
  const seed = opts.seed ?? 42;
  const valFraction = opts.valFraction ?? 0.1;
  const testFraction = opts.testFraction ?? 0.15;
  checkFraction('valFraction', valFraction);
  checkFraction('testFraction', testFraction);

  const order = new Map(ds.images.map((img, i) => [img, i] as const));
  const officialTest = ds.images.filter((img) => img.source === 'test');
  const hasOfficialTest = ds.sources.includes('test') && officialTest.length > 0;
  const valTimeFraction = opts.valTimeFraction ?? 0;
  checkFraction('valTimeFraction', valTimeFraction);
  // The out-of-time patients leave the pool before the random carve, so no later split can take them.
  const { held: valTime, rest: pool } = holdOutEarliest(
    ds.images.filter((img) => img.source !== 'test'),
    valTimeFraction,
  );
  const carve = hasOfficialTest ? [valFraction] : [testFraction, valFraction];
  if (!hasOfficialTest && testFraction + valFraction >= 1) {
    throw new RangeError(`testFraction + valFraction must be below 1, got ${testFraction + valFraction}`);
  }

  const rng = makeRng(seed);
  const patients = groupByPatient(pool);
  const train: PatientGroup[] = [];
  const val: PatientGroup[] = [];
  const test: PatientGroup[] = [];
  for (const label of LABELS) {
    // Sorting by id first makes the shuffle depend only on the seed and the set of patients.
    const stratum = patients.filter((p) => p.label === label).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const parts = carveStratum(stratum, rng, carve);
    if (hasOfficialTest) {
      val.push(...parts[0]);
      train.push(...parts[1]);
    } else {
      test.push(...parts[0]);
      val.push(...parts[1]);
      train.push(...parts[2]);
    }
  }
  return {
    train: inOriginalOrder(flatten(train), order),
    val: inOriginalOrder(flatten(val), order),
    test: hasOfficialTest ? officialTest : inOriginalOrder(flatten(test), order),
    seed,
    testSource: hasOfficialTest ? 'official' : 'carved',
    root: ds.root,
    ...(valTime.length ? { valTime: inOriginalOrder(valTime, order) } : {}),
  };
}

/** Image and patient counts per split and label. */
export function splitSummary(split: Split): SplitSummaryRow[] {
  const rows: SplitSummaryRow[] = [];
  for (const name of SPLIT_NAMES) {
    for (const label of LABELS) {
      const images = split[name].filter((img) => img.label === label);
      rows.push({ split: name, label, images: images.length, patients: new Set(images.map((i) => i.patient)).size });
    }
  }
  return rows;
}

export interface SplitSizeRow {
  split: SplitName;
  NORMAL: number;
  PNEUMONIA: number;
  images: number;
  patients: number;
  '% PNEUMONIA': number;
}

/** One row per split: images per class, distinct patients, share of pneumonia. */
export function splitSizes(split: Split): SplitSizeRow[] {
  const summary = splitSummary(split);
  return SPLIT_NAMES.map((name) => {
    const n = summary.find((r) => r.split === name && r.label === 'NORMAL')!;
    const p = summary.find((r) => r.split === name && r.label === 'PNEUMONIA')!;
    const images = n.images + p.images;
    return { split: name, NORMAL: n.images, PNEUMONIA: p.images, images, patients: n.patients + p.patients, '% PNEUMONIA': Number(((100 * p.images) / Math.max(1, images)).toFixed(1)) };
  });
}

/** Patient ids found in more than one split (sorted); a sound split has none. */
export function patientsShared(split: Split): string[] {
  const seenIn = new Map<string, Set<string>>();
  const parts: Array<[string, ImageRecord[]]> = [...SPLIT_NAMES.map((n) => [n, split[n]] as [string, ImageRecord[]]), ['valTime', split.valTime ?? []]];
  for (const [name, images] of parts) {
    for (const img of images) {
      let set = seenIn.get(img.patient);
      if (!set) seenIn.set(img.patient, (set = new Set()));
      set.add(name);
    }
  }
  return [...seenIn.entries()]
    .filter(([, splits]) => splits.size > 1)
    .map(([id]) => id)
    .sort();
}

/** On-disk form of a split. Paths are stored absolute, exactly as in ImageRecord, so the file is unambiguous. */
interface SplitFile {
  format: 'pneumonia-split';
  version: 1;
  seed: number;
  testSource: Split['testSource'];
  root?: string;
  valTime?: ImageRecord[];
  train: ImageRecord[];
  val: ImageRecord[];
  test: ImageRecord[];
}

/** Writes the split as JSON (absolute image paths), atomically: a temp file renamed into place. */
export async function saveSplit(split: Split, file: string): Promise<void> {
  const body: SplitFile = {
    format: 'pneumonia-split',
    version: 1,
    seed: split.seed,
    testSource: split.testSource,
    ...(split.root ? { root: split.root } : {}),
    ...(split.valTime?.length ? { valTime: split.valTime } : {}),
    train: split.train,
    val: split.val,
    test: split.test,
  };
  await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(body, null, 1));
  await fsp.rename(tmp, file);
}

function isRecord(x: unknown): x is ImageRecord {
  const r = x as ImageRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.path === 'string' &&
    typeof r.patient === 'string' &&
    (LABELS as readonly string[]).includes(r.label) &&
    (['train', 'val', 'test'] as string[]).includes(r.source)
  );
}

/** Reads a split written by saveSplit; a missing or malformed file is an Error naming the file. */
export async function loadSplit(file: string): Promise<Split> {
  let parsed: Partial<SplitFile>;
  try {
    parsed = JSON.parse(await fsp.readFile(file, 'utf8')) as Partial<SplitFile>;
  } catch (err) {
    throw new Error(`Cannot read split file ${file}: ${(err as Error).message}. Delete it to make a new split.`);
  }
  const ok =
    parsed?.format === 'pneumonia-split' &&
    parsed.version === 1 &&
    typeof parsed.seed === 'number' &&
    (parsed.testSource === 'official' || parsed.testSource === 'carved') &&
    SPLIT_NAMES.every((n) => Array.isArray(parsed[n]) && parsed[n]!.every(isRecord)) &&
    (parsed.valTime === undefined || (Array.isArray(parsed.valTime) && parsed.valTime.every(isRecord)));
  if (!ok) throw new Error(`Split file ${file} is not a valid split (format pneumonia-split v1). Delete it to make a new split.`);
  return {
    train: parsed.train!,
    val: parsed.val!,
    test: parsed.test!,
    seed: parsed.seed!,
    testSource: parsed.testSource!,
    root: typeof parsed.root === 'string' ? parsed.root : inferRoot(parsed.train!),
    ...(parsed.valTime?.length ? { valTime: parsed.valTime } : {}),
  };
}

/** Split files from before `root` was saved: images live at <root>/<train|val|test>/<CLASS>/<file>. */
function inferRoot(train: ImageRecord[]): string | undefined {
  return train.length ? path.resolve(train[0].path, '..', '..', '..') : undefined;
}

export interface PatientOverlapRow {
  first: SplitName;
  second: SplitName;
  'patients in first': number;
  'patients in second': number;
  shared: number;
}

/** Patients each pair of splits has in common, as a table. */
export function patientOverlap(split: Split): PatientOverlapRow[] {
  const patientsOf = (name: SplitName) => new Set(split[name].map((r) => r.patient));
  const pairs: [SplitName, SplitName][] = [['train', 'val'], ['train', 'test'], ['val', 'test']];
  return pairs.map(([a, b]) => {
    const A = patientsOf(a);
    const B = patientsOf(b);
    return { first: a, second: b, 'patients in first': A.size, 'patients in second': B.size, shared: [...A].filter((p) => B.has(p)).length };
  });
}

export interface LeakCheck {
  /** Patients in two of the splits we built: must be empty. */
  leaked: string[];
  /** Ids of the official test/ that also occur in train/val: expected (ids are numbered per folder), reported. */
  reusedOfficialIds: number;
}

/**
 * The patient-leak check for the splits we build. The official test/ is used as published: the dataset numbers
 * patients per folder, so an id such as `person1` in test/ need not be train's person1.
 */
export function checkPatientLeaks(split: Split): LeakCheck {
  const official = split.testSource === 'official';
  const leaked = patientsShared(official ? { ...split, test: [] } : split);
  const reusedOfficialIds = official ? patientsShared({ ...split, val: [] }).length + patientsShared({ ...split, train: [] }).length : 0;
  return { leaked, reusedOfficialIds };
}

/** Throws when the split leaks a patient across the splits we built (a bug); returns the check otherwise. */
export function assertNoPatientLeak(split: Split): LeakCheck {
  const check = checkPatientLeaks(split);
  if (check.leaked.length) {
    throw new Error(`Split leaks ${check.leaked.length} patient(s) across splits (e.g. ${check.leaked.slice(0, 5).join(', ')}); this is a bug.`);
  }
  return check;
}
