/**
 * Acquisition order from Kaggle file names, for an out-of-time validation split.
 *
 * The official test split's normal films come from acquisition numbers below every training film (test
 * `NORMAL2-IM-` 7 to 381 and `IM-` 1 to 111; train `NORMAL2-IM-` 383 to 1423 and `IM-` 115 to 766), and the model
 * over-calls pneumonia on them. Holding out the earliest-numbered patients of each series of `train/` gives a
 * validation set that differs from training the way the test set does, so model selection and the threshold can be
 * judged on it. Pneumonia files (`person12_bacteria_45`) are numbered by patient; the same share of their earliest
 * patients is held out, so the out-of-time split keeps the class balance.
 */

import type { ImageRecord } from '../types';

/** A series (`IM`, `NORMAL2-IM`, `person`) and the patient's number in it. */
export interface AcquisitionKey {
  series: string;
  number: number;
}

/** `IM-0115-0001` -> IM 115, `NORMAL2-IM-0383-0001` -> NORMAL2-IM 383, `person12_virus_45` -> person 12; else null. */
export function acquisitionKey(fileName: string): AcquisitionKey | null {
  const stem = fileName.replace(/^.*[\\/]/, '').replace(/\.[^.]*$/, '');
  const person = /^(person)(\d+)(?:[_\-\s]|$)/i.exec(stem);
  if (person) return { series: person[1].toLowerCase(), number: Number(person[2]) };
  const numbered = /^(.*?)-(\d+)-\d+$/.exec(stem);
  if (numbered && numbered[1]) return { series: numbered[1], number: Number(numbered[2]) };
  return null;
}

export interface PatientFilms {
  id: string;
  /** One file name of the patient's (all of a patient's films share the series and number). */
  fileName: string;
  images: number;
}

/**
 * The earliest patients of every series, whole patients at a time, until they hold about `fraction` of that series'
 * images. Patients whose names carry no acquisition number are never held out.
 */
export function earliestPatients(patients: readonly PatientFilms[], fraction: number): Set<string> {
  if (!(fraction >= 0 && fraction < 1)) throw new RangeError(`the out-of-time fraction must be in [0, 1), got ${fraction}`);
  const bySeries = new Map<string, Array<{ id: string; number: number; images: number }>>();
  for (const p of patients) {
    const key = acquisitionKey(p.fileName);
    if (!key) continue;
    const list = bySeries.get(key.series) ?? [];
    list.push({ id: p.id, number: key.number, images: p.images });
    bySeries.set(key.series, list);
  }
  const held = new Set<string>();
  for (const list of bySeries.values()) {
    const total = list.reduce((s, p) => s + p.images, 0);
    const target = Math.round(fraction * total);
    let count = 0;
    for (const p of list.sort((a, b) => a.number - b.number || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
      if (count >= target || Math.abs(count + p.images - target) >= Math.abs(count - target)) break;
      held.add(p.id);
      count += p.images;
    }
  }
  return held;
}

/**
 * Moves the earliest patients of every series (about `fraction` of each series' images) out of `images`:
 * the out-of-time validation set, and the images that stay.
 */
export function holdOutEarliest(images: readonly ImageRecord[], fraction: number): { held: ImageRecord[]; rest: ImageRecord[] } {
  const byPatient = new Map<string, ImageRecord[]>();
  for (const img of images) byPatient.set(img.patient, [...(byPatient.get(img.patient) ?? []), img]);
  const held = earliestPatients(
    [...byPatient].map(([id, imgs]) => ({ id, fileName: imgs[0].path, images: imgs.length })),
    fraction,
  );
  return { held: images.filter((i) => held.has(i.patient)), rest: images.filter((i) => !held.has(i.patient)) };
}
