/**
 * bench-train end to end on a tiny model: the shared train step runs, the profile adds up, one epoch of the default
 * recipe is measured on a dataset (or skipped, saying why), the last line is the JSON.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { describeRatios, profileKernels, runBenchTrain, summarizeRounds, type BenchRound } from '../src/cli/bench-train';
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
      // The CPU it ran on, in the JSON and on its own line; no native build on wasm.
      expect(result.cpu).toBe(os.cpus()[0].model.trim());
      expect(['AVX-512', 'AVX2', 'SSE', 'unknown']).toContain(result.cpu_isa);
      expect(result).not.toHaveProperty('native_vector_lanes');
      expect(lines).toContain(`cpu: ${result.cpu}, ${result.cpu_isa}${result.isa_caps ? `; capped: ${result.isa_caps}` : ''}`);
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
  it('rounds: each ratio is ours over the peer measured right after it; medians, and the ratio spread', () => {
    const round = (train: number, infer: number, peerTrain: number, peerInfer: number): BenchRound => ({
      train: { imgPerS: train, cpuS: 2, wallS: 1 },
      infer: { imgPerS: infer, cpuS: 1, wallS: 0.5 },
      peer: { train_img_per_s: peerTrain, infer_img_per_s: peerInfer, threads: 2 },
    });
    // Ratios: train 3, 2, 2.5 -> median 2.5; infer 4, 3, 2 -> median 3. Ours' medians 180 / 600, the peer's 72 / 200.
    const summary = summarizeRounds([round(180, 800, 60, 200), round(190, 600, 95, 200), round(175, 500, 70, 250)]);
    expect(summary).toMatchObject({
      rounds: 3,
      train_img_per_s: 180,
      infer_img_per_s: 600,
      peer_train_img_per_s: 70,
      peer_infer_img_per_s: 200,
      train_ratio: 2.5,
      train_ratio_min: 2,
      train_ratio_max: 3,
      infer_ratio: 3,
      infer_ratio_min: 2,
      infer_ratio_max: 4,
      train_cpu_s: 6,
      infer_wall_s: 1.5,
    });
    expect(describeRatios(summary)).toBe('against the peer (median of 3 rounds, lowest-highest): training 2.5x (2-3), prediction 3x (2-4)');
    // One round: the same keys as before rounds existed, no spread.
    const one = summarizeRounds([round(180, 800, 60, 200)]);
    expect(one.train_ratio).toBe(3);
    expect(one).not.toHaveProperty('train_ratio_min');
    expect(describeRatios({ ...one, epoch_ratio: 2.2 })).toBe(
      "against the peer (one round): training 3x, prediction 4x, one epoch end to end 2.2x the peer's bare step",
    );
    // Without the peer: no ratios at all.
    const alone = summarizeRounds([{ ...round(180, 800, 60, 200), peer: undefined }]);
    expect(alone).not.toHaveProperty('train_ratio');
    expect(describeRatios(alone)).toBeUndefined();
  });

  it('--rounds runs the peer after each round and reports the medians', async () => {
    // A stand-in "python": answers the torch probe, then reports peer throughputs 40, 10, 20 on successive runs.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-peer-'));
    const python = path.join(dir, 'python');
    fs.writeFileSync(
      python,
      [
        '#!/bin/sh',
        'if [ "$1" = "-c" ]; then echo 9.9.9-fake; exit 0; fi',
        `n=$(cat "${dir}/n" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "${dir}/n"`,
        'case $n in 1) t=40;; 2) t=10;; *) t=20;; esac',
        'echo "{\\"train_img_per_s\\": $t, \\"infer_img_per_s\\": $((t * 3)), \\"threads\\": 2, \\"torch\\": \\"9.9.9-fake\\"}"',
      ].join('\n'),
      { mode: 0o755 },
    );
    const script = path.join(dir, 'seed_cnn_torch.py');
    fs.writeFileSync(script, '# not run: the stand-in python ignores it\n');
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      const peerFlags = ['--peer', '--peer-script', script, '--peer-python', python, '--rounds', '3'];
      const tiny = ['--variant', 'small', '--size', '32', '--batch', '4', '--steps', '1', '--warmup', '1', '--backend', 'cpu'];
      const result = await runBenchTrain(['node', 'bench-train', ...peerFlags, ...tiny, '--no-epoch']);
      expect(fs.readFileSync(path.join(dir, 'n'), 'utf8').trim()).toBe('3');
      expect(lines.filter((l) => /^round \d\/3 peer: train/.test(l))).toHaveLength(3);
      expect(lines.at(-2)).toMatch(/^against the peer \(median of 3 rounds, lowest-highest\): training [\d.]+x \([\d.]+-[\d.]+\)/);
      expect(result).toMatchObject({ rounds: 3, peer_train_img_per_s: 20, peer_infer_img_per_s: 60, peer_torch: '9.9.9-fake' });
      // The spread is over the ratios each round printed (ours over the peer right after it).
      const printed = lines
        .map((l) => /^round \d\/3 peer: .*; ratios ([\d.]+)x \/ ([\d.]+)x/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => Number(m[1]))
        .sort((x, y) => x - y);
      expect(printed).toHaveLength(3);
      const [lo, mid, hi] = [result.train_ratio_min, result.train_ratio, result.train_ratio_max] as number[];
      expect(lo).toBeCloseTo(printed[0], 1);
      expect(mid).toBeCloseTo(printed[1], 1);
      expect(hi).toBeCloseTo(printed[2], 1);
    } finally {
      spy.mockRestore();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
