/** bench-train end to end on a tiny model: the shared train step runs, the profile adds up, the last line is the JSON. */
import { describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { profileKernels, runBenchTrain } from '../src/cli/bench-train';
import { initBackend } from '../src/accel';

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
      ]),
    ).rejects.toThrow(/peer script not found at \/nonexistent\/seed_cnn_torch.py/);
  });

  it('profileKernels counts each top-level kernel once and restores the registry', async () => {
    await initBackend({ prefer: 'wasm', quiet: true });
    const before = tf.getKernelsForBackend('wasm').map((k) => k.kernelFunc);
    const rows = profileKernels(() => tf.add(tf.ones([3]), tf.ones([3])));
    expect(rows.find((r) => r.kernel === 'Add')?.calls).toBe(1);
    expect(tf.getKernelsForBackend('wasm').map((k) => k.kernelFunc)).toEqual(before);
  });
});
