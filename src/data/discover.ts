/**
 * Finds the images of a Kaggle-layout chest X-ray dataset: ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.
 *
 * Decisions (documented because they shape what the user sees):
 * - Split and class folder names match case-insensitively; any split may be missing except train.
 * - If ROOT holds no split folders but a single `chest_xray` folder (the Kaggle zip nests
 *   chest_xray/chest_xray), we descend into it, repeatedly.
 * - Class folders are read flat (the Kaggle layout has no sub-folders); anything that is not an image
 *   (hidden files, `.DS_Store`, `__MACOSX`, other extensions, sub-folders, stray files) is listed in
 *   `skipped` with a reason, never silently dropped.
 * - train and test must each hold both classes with at least one image: a model cannot be trained or
 *   evaluated on one class, so that is a DatasetError naming the folder. val may lack a class or be
 *   empty, because it is pooled with train before the validation split (see split.ts).
 * - Images are sorted by source (train, val, test), label (NORMAL, PNEUMONIA), then file name
 *   (code-point order, independent of locale), so every run sees the same order.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { LABELS, type Dataset, type ImageRecord, type Label, type SkippedFile, type SourceSplit } from '../types';

/** A user-facing problem with the dataset folder; the message names the path and how to fix it. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}

export const SOURCE_SPLITS: readonly SourceSplit[] = ['train', 'val', 'test'];
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpeg', '.jpg', '.png'];

const FIX_HINT = 'Run `npm run data:demo` or `npm run data:get`, or pass --data DIR';

/**
 * Patient id from a Kaggle file name, so that all of one patient's images land in the same split.
 * `person123_bacteria_456.jpeg` -> `person123`; otherwise the stem minus its last number
 * (`IM-0115-0001` -> `IM-0115`, `NORMAL2-IM-1427-0001` -> `NORMAL2-IM-1427`); a stem without a
 * trailing number (or that is only a number) is its own id.
 */
export function patientId(fileName: string): string {
  const base = path.basename(fileName);
  const stem = base.replace(/\.[^.]*$/, '') || base;
  const person = /^(person\d+)(?:[_\-\s]|$)/i.exec(stem);
  if (person) return person[1];
  const beforeLastNumber = /^(.*?)[-_\s.]*\d+$/.exec(stem);
  if (beforeLastNumber && beforeLastNumber[1].length > 0) return beforeLastNumber[1];
  return stem;
}

function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

/** Code-point comparison: stable across machines and locales, unlike localeCompare. */
function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function listDir(dir: string): Promise<import('fs').Dirent[]> {
  const entries = await fsp.readdir(dir, { withFileTypes: true });
  return entries.sort((a, b) => byName(a.name, b.name));
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** Why an entry that is not a usable image was skipped, or null if it is a usable image file. */
function skipReason(name: string, isDir: boolean): string | null {
  if (name === '__MACOSX') return 'macOS archive metadata folder';
  if (name.startsWith('.')) return isDir ? 'hidden folder' : 'hidden file';
  if (isDir) return 'unexpected folder (class folders are read flat)';
  if (!isImageFile(name)) return `not an image (extension must be one of ${IMAGE_EXTENSIONS.join(', ')})`;
  return null;
}

/** Directories (and symlinks to directories) by lower-cased name. */
async function subdirsByLowerName(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const entry of await listDir(dir)) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory() || (entry.isSymbolicLink() && (await isDirectory(full)))) {
      found.set(entry.name.toLowerCase(), full);
    }
  }
  return found;
}

/**
 * Follows the Kaggle zip's chest_xray/chest_xray nesting down to the folder that holds train/; whatever else
 * sits beside the chest_xray folders on the way (a `__MACOSX` folder, stray files) is listed as skipped.
 */
async function resolveDatasetRoot(root: string, skipped: SkippedFile[]): Promise<string> {
  let current = root;
  for (let depth = 0; depth < 4; depth++) {
    const dirs = await subdirsByLowerName(current);
    if (dirs.has('train')) return current;
    const meaningful = [...dirs.keys()].filter((n) => n !== '__macosx' && !n.startsWith('.'));
    if (meaningful.length === 1 && meaningful[0] === 'chest_xray') {
      await skipStrays(current, new Set(['chest_xray']), skipped);
      current = dirs.get('chest_xray')!;
      continue;
    }
    break;
  }
  const present = SOURCE_SPLITS.filter((s) => s !== 'train');
  const dirs = await subdirsByLowerName(current);
  const others = present.filter((s) => dirs.has(s));
  const what = others.length > 0 ? `found ${others.join(' and ')}/ but no train/ folder` : 'no train/ folder';
  throw new DatasetError(
    `No dataset at ${root}: ${what}; expected ${path.join(root, 'train', '{NORMAL,PNEUMONIA}')}. ${FIX_HINT}.`,
  );
}

async function discoverClassFolder(
  dir: string,
  label: Label,
  source: SourceSplit,
  images: ImageRecord[],
  skipped: SkippedFile[],
): Promise<number> {
  let count = 0;
  for (const entry of await listDir(dir)) {
    const full = path.join(dir, entry.name);
    const isDir = entry.isDirectory() || (entry.isSymbolicLink() && (await isDirectory(full)));
    const reason = skipReason(entry.name, isDir);
    if (reason) {
      skipped.push({ path: full, reason });
      continue;
    }
    images.push({ path: full, label, patient: patientId(entry.name), source });
    count++;
  }
  return count;
}

/** Entries directly in ROOT or a split folder that are not the folders we read. */
async function skipStrays(dir: string, expected: Set<string>, skipped: SkippedFile[]): Promise<void> {
  for (const entry of await listDir(dir)) {
    const full = path.join(dir, entry.name);
    const isDir = entry.isDirectory() || (entry.isSymbolicLink() && (await isDirectory(full)));
    if (isDir && expected.has(entry.name.toLowerCase())) continue;
    const reason =
      skipReason(entry.name, isDir) ??
      (isDir ? 'unexpected folder (not a dataset, split or class folder)' : 'file outside a class folder');
    skipped.push({ path: full, reason });
  }
}

/** Finds all images under a Kaggle-layout root; see the module comment for the rules. */
export async function discoverDataset(root: string): Promise<Dataset> {
  const absRoot = path.resolve(root);
  if (!(await isDirectory(absRoot))) {
    throw new DatasetError(
      `No dataset at ${absRoot}: the folder does not exist; expected ${path.join(absRoot, 'train', '{NORMAL,PNEUMONIA}')}. ${FIX_HINT}.`,
    );
  }
  const skipped: SkippedFile[] = [];
  const dataRoot = await resolveDatasetRoot(absRoot, skipped);
  const images: ImageRecord[] = [];
  const sources: SourceSplit[] = [];
  const splitDirs = await subdirsByLowerName(dataRoot);
  await skipStrays(dataRoot, new Set(SOURCE_SPLITS), skipped);

  for (const source of SOURCE_SPLITS) {
    const splitDir = splitDirs.get(source);
    if (!splitDir) continue;
    sources.push(source);
    const classDirs = await subdirsByLowerName(splitDir);
    await skipStrays(splitDir, new Set(LABELS.map((l) => l.toLowerCase())), skipped);
    for (const label of LABELS) {
      const classDir = classDirs.get(label.toLowerCase());
      const count = classDir ? await discoverClassFolder(classDir, label, source, images, skipped) : 0;
      if (count === 0 && source !== 'val') {
        const where = classDir ?? path.join(splitDir, label);
        const problem = classDir ? 'holds no .jpeg/.jpg/.png images' : 'is missing';
        throw new DatasetError(
          `Incomplete dataset at ${dataRoot}: ${where} ${problem}; ${source}/ needs both ${LABELS.join(' and ')} images. ${FIX_HINT}.`,
        );
      }
    }
  }
  return { root: dataRoot, images, skipped, sources };
}

/** "train/NORMAL 1341, train/PNEUMONIA 3875": images per source folder and class, in the order they were found. */
export function countsByFolderAndClass(images: readonly ImageRecord[]): string {
  const counts = new Map<string, number>();
  for (const img of images) counts.set(`${img.source}/${img.label}`, (counts.get(`${img.source}/${img.label}`) ?? 0) + 1);
  return [...counts.entries()].map(([k, n]) => `${k} ${n}`).join(', ');
}

/** The dataset in a line or two for a log or a notebook: where, how many images and patients, what was skipped and why. */
export function describeDataset(ds: Dataset, maxSkipped = 3): string[] {
  const patients = new Set(ds.images.map((i) => i.patient)).size;
  const lines = [`Data: ${ds.root}: ${ds.images.length} images of ${patients} patients (${countsByFolderAndClass(ds.images)})`];
  if (ds.skipped.length) {
    const shown = ds.skipped.slice(0, maxSkipped).map((s) => `${path.basename(s.path)} (${s.reason})`);
    lines.push(`  skipped ${ds.skipped.length} file(s): ${shown.join(', ')}${ds.skipped.length > maxSkipped ? ', ...' : ''}`);
  }
  return lines;
}
