import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Batch, BatchOptions, batchCount, epochBatches, epochOrder, epochSize, toTensor } from '../src/data/batches';
import { LABELS, type DecodedImages, type ImageRecord } from '../src/types';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

/** Image i is filled with the value i (mod 256), so a batch's pixels tell which rows it holds. */
function fixture(labels: number[], size = 4): DecodedImages {
  const records: ImageRecord[] = labels.map((label, i) => ({
    path: `/fixture/${LABELS[label]}/person${i}_x.jpeg`,
    label: LABELS[label],
    patient: `person${i}`,
    source: 'train',
  }));
  const pixels = new Uint8Array(labels.length * size * size);
  labels.forEach((_, i) => pixels.fill(i % 256, i * size * size, (i + 1) * size * size));
  return { records, size, pixels, labels: Uint8Array.from(labels), skipped: [] };
}

const labelsOf = (ones: number, zeros: number): number[] => [...Array(ones).fill(1), ...Array(zeros).fill(0)];

/** Iterates an epoch, copying out what each batch held (the tensors themselves die with the iteration). */
function collect(
  images: DecodedImages,
  opts: BatchOptions,
): Array<{ indices: number[]; xs: Float32Array; ys: Float32Array; shape: number[] }> {
  const out = [];
  for (const b of epochBatches(images, opts)) {
    out.push({
      indices: b.indices,
      xs: (b.xs.dataSync() as Float32Array).slice(),
      ys: (b.ys.dataSync() as Float32Array).slice(),
      shape: b.xs.shape,
    });
  }
  return out;
}

describe('epochBatches', () => {
  it('visits every row exactly once per epoch, in batches of the right size, with matching pixels and labels', () => {
    const labels = Array.from({ length: 23 }, (_, i) => (i % 3 === 0 ? 0 : 1));
    const images = fixture(labels, 3);
    const batches = collect(images, { batchSize: 5, seed: 1 });
    expect(batches.map((b) => b.indices.length)).toEqual([5, 5, 5, 5, 3]);
    expect(batches.length).toBe(batchCount(23, { batchSize: 5 }));
    const seen = batches.flatMap((b) => b.indices);
    expect([...seen].sort((a, b) => a - b)).toEqual(labels.map((_, i) => i));
    expect(seen).not.toEqual(labels.map((_, i) => i)); // shuffled by default
    for (const b of batches) {
      expect(b.shape).toEqual([b.indices.length, 3, 3, 1]);
      b.indices.forEach((row, k) => {
        const img = b.xs.subarray(k * 9, (k + 1) * 9);
        for (const v of img) expect(v).toBeCloseTo(row / 255, 7);
        expect(b.ys[k]).toBe(labels[row]);
      });
    }
  });

  it('dropRemainder drops only the final partial batch', () => {
    const images = fixture(labelsOf(12, 11));
    const batches = collect(images, { batchSize: 5, dropRemainder: true });
    expect(batches.map((b) => b.indices.length)).toEqual([5, 5, 5, 5]);
    expect(batchCount(23, { batchSize: 5, dropRemainder: true })).toBe(4);
    expect(new Set(batches.flatMap((b) => b.indices)).size).toBe(20);
    expect(batchCount(20, { batchSize: 5, dropRemainder: true })).toBe(4);
    expect(batchCount(20, { batchSize: 5 })).toBe(4);
    expect(batchCount(0, { batchSize: 5 })).toBe(0);
  });

  it('shuffles reproducibly per (seed, epoch), differently across epochs and seeds; shuffle:false keeps row order', () => {
    const labels = new Uint8Array(labelsOf(20, 20));
    const order = (o: Omit<BatchOptions, 'batchSize'>) => epochOrder(labels, o);
    expect(order({ seed: 3, epoch: 0 })).toEqual(order({ seed: 3, epoch: 0 }));
    expect(order({ seed: 3, epoch: 1 })).toEqual(order({ seed: 3, epoch: 1 }));
    expect(order({ seed: 3, epoch: 0 })).not.toEqual(order({ seed: 3, epoch: 1 }));
    expect(order({ seed: 3, epoch: 0 })).not.toEqual(order({ seed: 4, epoch: 0 }));
    // Neighbouring (seed, epoch) pairs must not give shifted copies of each other.
    expect(order({ seed: 3, epoch: 1 })).not.toEqual(order({ seed: 4, epoch: 0 }));
    expect(order({ shuffle: false, seed: 9, epoch: 5 })).toEqual(Array.from(labels, (_, i) => i));
    const images = fixture(Array.from(labels));
    expect(collect(images, { batchSize: 8, seed: 3, epoch: 2 }).flatMap((b) => b.indices)).toEqual(order({ seed: 3, epoch: 2 }));
  });

  it('oversample yields balanced classes, using each minority image a near-equal number of times', () => {
    const labels = labelsOf(30, 7); // 7 NORMAL, 30 PNEUMONIA
    const images = fixture(labels);
    expect(epochSize(images.labels, { balance: 'oversample' })).toBe(60);
    const batches = collect(images, { batchSize: 16, balance: 'oversample', seed: 2 });
    expect(batches.map((b) => b.indices.length)).toEqual([16, 16, 16, 12]);
    const rows = batches.flatMap((b) => b.indices);
    const ys = batches.flatMap((b) => Array.from(b.ys));
    expect(ys.filter((y) => y === 1).length).toBe(30);
    expect(ys.filter((y) => y === 0).length).toBe(30);
    const uses = new Map<number, number>();
    for (const r of rows) uses.set(r, (uses.get(r) ?? 0) + 1);
    labels.forEach((label, row) => {
      if (label === 1) expect(uses.get(row)).toBe(1);
      else expect([4, 5]).toContain(uses.get(row)); // 30 / 7 = 4 r 2
    });
    // The pairing of rows and labels survives oversampling.
    batches.forEach((b) => b.indices.forEach((row, k) => expect(b.ys[k]).toBe(labels[row])));
  });

  it('oversample repeats whole minority sets when the ratio is an integer, and refuses a missing class', () => {
    const labels = new Uint8Array(labelsOf(10, 30)); // minority is PNEUMONIA here
    const rows = epochOrder(labels, { balance: 'oversample', seed: 1 });
    expect(rows.length).toBe(60);
    for (let row = 0; row < 10; row++) expect(rows.filter((r) => r === row).length).toBe(3);
    expect(() => epochOrder(new Uint8Array([1, 1, 1]), { balance: 'oversample' })).toThrow(/no NORMAL images/);
    expect(() => epochSize(new Uint8Array([0, 0]), { balance: 'oversample' })).toThrow(/no PNEUMONIA images/);
    expect(epochSize(labels)).toBe(40);
  });

  it('augments reproducibly per (seed, epoch) and only changes pixels, not labels or order', () => {
    // Non-uniform images so a flip is visible: row gradient plus the row id.
    const size = 6;
    const images = fixture(labelsOf(5, 5), size);
    images.pixels.forEach((_, i) => (images.pixels[i] = (Math.floor(i / size) % size) * 40 + Math.floor(i / (size * size))));
    const opts: BatchOptions = { batchSize: 4, seed: 5, epoch: 0, augment: { vflip: true, brightness: 0.05 } };
    const a = collect(images, opts);
    const b = collect(images, opts);
    const c = collect(images, { ...opts, epoch: 1 });
    const plain = collect(images, { ...opts, augment: undefined });
    expect(a.map((x) => Array.from(x.xs))).toEqual(b.map((x) => Array.from(x.xs)));
    expect(a.map((x) => x.indices)).toEqual(plain.map((x) => x.indices));
    expect(a.map((x) => Array.from(x.ys))).toEqual(plain.map((x) => Array.from(x.ys)));
    expect(a.map((x) => Array.from(x.xs))).not.toEqual(plain.map((x) => Array.from(x.xs)));
    expect(c.map((x) => Array.from(x.xs))).not.toEqual(a.map((x) => Array.from(x.xs)));
    for (const batch of a) for (const v of batch.xs) expect(v >= 0 && v <= 1).toBe(true);
  });

  it('checks options and data immediately, with clear messages', () => {
    const images = fixture(labelsOf(3, 3));
    expect(() => epochBatches(images, { batchSize: 0 })).toThrow(/batchSize must be a positive integer/);
    expect(() => epochBatches(images, { batchSize: 2, augment: { zoom: 3 } })).toThrow(/zoom=3 is out of range/);
    expect(() => epochBatches(images, { batchSize: 2, balance: 'undersample' as never })).toThrow(/balance must be/);
    const broken = { ...images, pixels: images.pixels.subarray(1) };
    expect(() => epochBatches(broken, { batchSize: 2 })).toThrow(/pixels has 95 values but 6 images of 4x4 need 96/);
    const badLabel = { ...images, labels: Uint8Array.from([0, 1, 2, 0, 1, 0]) };
    expect(() => epochBatches(badLabel, { batchSize: 2 })).toThrow(/label 2 at row 2 .*person2_x\.jpeg/);
  });
});

describe('epochBatches tensor ownership', () => {
  const images = fixture(labelsOf(9, 8), 5);
  const opts: BatchOptions = { batchSize: 4, seed: 1, augment: { zoom: 0.2, vflip: true, contrast: 0.1 } };

  it('a full epoch leaves no tensors behind and keeps only one batch alive at a time', () => {
    const before = tf.memory().numTensors;
    let batches = 0;
    for (const b of epochBatches(images, opts)) {
      expect(tf.memory().numTensors).toBe(before + 2);
      expect(b.xs.isDisposed).toBe(false);
      batches++;
    }
    expect(batches).toBe(5);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('breaking out mid-epoch, or throwing, disposes the current batch', () => {
    const before = tf.memory().numTensors;
    let kept: Batch | undefined;
    for (const b of epochBatches(images, opts)) {
      kept = b;
      break;
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(kept?.xs.isDisposed).toBe(true);
    expect(kept?.ys.isDisposed).toBe(true);

    expect(() => {
      let i = 0;
      for (const _ of epochBatches(images, opts)) {
        if (++i === 2) throw new Error('training step failed');
      }
    }).toThrow('training step failed');
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a full epoch followed by a break mid-epoch leaves the tensor count unchanged', () => {
    const before = tf.memory().numTensors;
    for (const _ of epochBatches(images, { ...opts, epoch: 0 })) {
      /* consume all */
    }
    let seen = 0;
    for (const _ of epochBatches(images, { ...opts, epoch: 1 })) {
      if (++seen === 3) break;
    }
    expect(seen).toBe(3);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('the previous batch is disposed when the next is requested, and survives awaits inside the loop body', async () => {
    const before = tf.memory().numTensors;
    let previous: Batch | undefined;
    for (const b of epochBatches(images, opts)) {
      if (previous) expect(previous.xs.isDisposed).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 1)); // like `await model.trainOnBatch(...)`
      expect(b.xs.isDisposed).toBe(false);
      expect(tf.tidy(() => b.xs.sum().dataSync()[0])).toBeGreaterThan(0); // still usable
      previous = b;
    }
    expect(previous?.xs.isDisposed).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('toTensor', () => {
  it('returns all or selected rows normalised to [0,1] as [n,size,size,1]', () => {
    const images = fixture([0, 1, 0, 1, 1], 3);
    images.pixels[3 * 9 + 4] = 255;
    const before = tf.memory().numTensors;
    const all = toTensor(images);
    expect(all.shape).toEqual([5, 3, 3, 1]);
    expect(all.dtype).toBe('float32');
    const values = all.dataSync();
    expect(values[2 * 9]).toBeCloseTo(2 / 255, 7);
    expect(values[3 * 9 + 4]).toBe(1);
    const some = toTensor(images, [3, 0]);
    expect(some.shape).toEqual([2, 3, 3, 1]);
    expect(some.dataSync()[4]).toBe(1);
    expect(some.dataSync()[9]).toBe(0);
    tf.dispose([all, some]);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => toTensor(images, [5])).toThrow(/row 5 is out of range \(0\.\.4\)/);
  });
});
