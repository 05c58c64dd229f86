/**
 * bench-train end to end on a tiny model: the shared train step runs, the profile adds up, one epoch of the default
 * recipe is measured on a dataset (or skipped, saying why), the last line is the JSON.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { profileKernels, runBenchTrain } from '../src/cli/bench-train';
import { initBackend } from '../src/accel';
import { generateDemoDataset } from '../src/data/demo';

describe('bench-train', () => {
  it('prints a final JSON line with throughput and memory, on the selected backend', async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      const result = await runBenchTrain([
        'node',
        'bench-train',
        '--variant',
        'small',
        '--size',
        '32',
        '--batch',
        '4',
        '--steps',
        '2',
        '--warmup',
        '1',
        '--profile',
        '--backend',
        'wasm',
        '--epoch-data',
        '/nonexistent/dataset',
      ]);
      const last = JSON.parse(lines[lines.length - 1]);
      expect(last).toEqual(result);
      expect(result.backend).toBe('wasm');
      for (const key of ['train_img_per_s', 'infer_img_per_s', 'peak_rss_mb']) {
        expect(typeof result[key]).toBe('number');
        expect(result[key] as number).toBeGreaterThan(0);
      }
      expect(result).not.toHaveProperty('train_ratio');
      expect(lines.some((l) => l.startsWith('kernel time of one training step'))).toBe(true);
      expect(lines.some((l) => /Conv2DBackpropFilter\s+[\d.]+ ms cpu/.test(l))).toBe(true);
      expect(lines).toContain('epoch: skipped (no dataset at /nonexistent/dataset; pass --epoch-data DIR, or --no-epoch)');
      expect(Object.keys(result).filter((k) => k.startsWith('epoch_'))).toEqual([]);
    } finally {
      spy.mockRestore();
    }
  });

  it('fails up front, naming the file, when the peer script is missing', async () => {
    await expect(
      runBenchTrain([
        'node',
        'bench-train',
        '--peer',
        '--peer-script',
        '/nonexistent/seed_cnn_torch.py',
        '--variant',
        'small',
        '--size',
        '32',
        '--no-epoch',
      ]),
    ).rejects.toThrow(/peer script not found at \/nonexistent\/seed_cnn_torch.py/);
  });

  it('measures one epoch of the default recipe on a dataset, with phases that add up to its wall time', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-epoch-'));
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      await generateDemoDataset({ outDir: dataDir, perClass: 24, testPerClass: 4, size: 48, seed: 3 });
      const result = await runBenchTrain(
        ['node', 'bench-train', '--variant', 'small', '--size', '32', '--batch', '8', '--steps', '1', '--warmup', '1'].concat([
          '--backend',
          'wasm',
          '--epoch-data',
          dataDir,
        ]),
      );
      // 48 training images minus the validation splits carved from them (the demo's own test/ is the test set).
      const images = result.epoch_images as number;
      expect(images).toBeGreaterThan(20);
      expect(images + (result.epoch_validation_images as number)).toBe(48);
      // epoch_s is rounded to 0.1 s, so on a sub-second epoch the two agree to about 10%.
      expect((result.epoch_img_per_s as number) / (images / (result.epoch_s as number))).toBeCloseTo(1, 0);
      const phases = ['batches', 'steps', 'callbacks', 'validation'].map((p) => result[`epoch_${p}_s`] as number);
      expect(phases.every((s) => s >= 0)).toBe(true);
      expect(phases[1]).toBeGreaterThan(0);
      const sum = phases.reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual((result.epoch_s as number) + 0.05);
      expect(sum).toBeGreaterThan(0.9 * (result.epoch_s as number) - 0.05);
      expect(lines.some((l) => /^epoch: [\d.]+ s = [\d.]+ training img\/s end to end$/.test(l))).toBe(true);
    } finally {
      spy.mockRestore();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('profileKernels counts each top-level kernel once and restores the registry', async () => {
    await initBackend({ prefer: 'wasm', quiet: true });
    const before = tf.getKernelsForBackend('wasm').map((k) => k.kernelFunc);
    const rows = profileKernels(() => tf.add(tf.ones([3]), tf.ones([3])));
    expect(rows.find((r) => r.kernel === 'Add')?.calls).toBe(1);
    expect(tf.getKernelsForBackend('wasm').map((k) => k.kernelFunc)).toEqual(before);
    const byShape = profileKernels(() => tf.add(tf.ones([3]), tf.ones([2, 3])), true);
    expect(byShape.find((r) => r.kernel.startsWith('Add '))).toMatchObject({ kernel: 'Add [3] [2,3]', calls: 1 });
  });
});
