import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { spawn } from 'child_process';
import { generateDemoDataset } from '../src/data/demo';
import { main as runMain, resolveDataDir } from '../src/cli/run';
import { main as predictMain } from '../src/cli/predict';
import type { EpochLogs } from '../src/train/train';

let tmp: string;
let dataDir: string;
let runsDir: string;

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-cli-'));
  dataDir = path.join(tmp, 'demo');
  runsDir = path.join(tmp, 'runs');
  await generateDemoDataset({ outDir: dataDir, perClass: 24, testPerClass: 8, size: 96, seed: 4 });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const quick = ['--epochs', '1', '--limit', '20', '--image-size', '64', '--variant', 'small', '--backend', 'wasm'];

describe('npm start (cli/run)', () => {
  it('a tiny demo run writes every run file; --resume extends it; predict uses its threshold', async () => {
    const c = capture();
    const code = await runMain(['--data', dataDir, '--out', runsDir, '--name', 'cli', ...quick], c.io, { handleSigint: false });
    expect(c.err).toEqual([]);
    expect(code).toBe(0);
    const runs = fs.readdirSync(runsDir);
    expect(runs.length).toBe(1);
    const runDir = path.join(runsDir, runs[0]);
    for (const f of [
      'config.json',
      'split.json',
      'history.json',
      'history.csv',
      'metrics.json',
      'predictions.csv',
      'summary.md',
      'model/model.json',
      'model/weights.bin',
      'checkpoints/latest/state.json',
    ]) {
      expect(fs.existsSync(path.join(runDir, f)), f).toBe(true);
    }
    const config = JSON.parse(fs.readFileSync(path.join(runDir, 'config.json'), 'utf8'));
    expect(config.config).toMatchObject({ imageSize: 64, variant: 'small', limit: 20 });
    expect(config.config.train.epochs).toBe(1);
    // The machine it trained on (wasm here: no native addon's lanes).
    const model = os.cpus()[0].model.trim();
    expect(config.cpu.slice(0, model.length)).toBe(model);
    expect(config.cpu.slice(model.length)).toMatch(/^, (AVX-512|AVX2|SSE|unknown)(; capped: .+)?$/);

    // Resume to 2 epochs: epoch 1 is not repeated.
    const r = capture();
    expect(await runMain(['--resume', runDir, '--epochs', '2'], r.io, { handleSigint: false })).toBe(0);
    const hist = JSON.parse(fs.readFileSync(path.join(runDir, 'history.json'), 'utf8')) as EpochLogs[];
    expect(hist.map((h) => h.epoch)).toEqual([1, 2]);
    expect(fs.readdirSync(runsDir).length).toBe(1);
    expect(fs.existsSync(path.join(runDir, '.lock')), 'the lock is released when the run ends').toBe(false);

    // A second writer while another process holds the run: refused, naming that process; the run is untouched.
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      fs.writeFileSync(
        path.join(runDir, '.lock'),
        JSON.stringify({ pid: holder.pid, host: os.hostname(), startedAt: '2026-12-01T10:00:00.000Z', command: 'npm start' }),
      );
      const second = capture();
      expect(await runMain(['--resume', runDir, '--epochs', '3'], second.io, { handleSigint: false })).toBe(1);
      expect(second.err.join('\n')).toMatch(
        new RegExp(`start: .* is being written by process ${holder.pid} on ${os.hostname()} \\(npm start, since`),
      );
      expect(second.err.join('\n')).not.toMatch(/\n\s+at /);
      expect((JSON.parse(fs.readFileSync(path.join(runDir, 'history.json'), 'utf8')) as EpochLogs[]).length).toBe(2);
    } finally {
      holder.kill();
      fs.rmSync(path.join(runDir, '.lock'), { force: true });
    }

    // Predict with the newest run: two good images and one broken file.
    const metrics = JSON.parse(fs.readFileSync(path.join(runDir, 'metrics.json'), 'utf8'));
    const images = ['NORMAL', 'PNEUMONIA'].map((c) => {
      const folder = path.join(dataDir, 'test', c);
      return path.join(folder, fs.readdirSync(folder).filter((f) => f.endsWith('.jpeg'))[0]);
    });
    const broken = path.join(tmp, 'broken.jpeg');
    fs.writeFileSync(broken, 'not an image');
    const gradcamDir = path.join(tmp, 'gradcam');
    const p = capture();
    const pcode = await predictMain(['--runs', runsDir, '--gradcam', gradcamDir, ...images, broken], p.io);
    expect(pcode).toBe(1);
    expect(p.out[0]).toBe('file\tprobability\tlabel');
    const rows = p.out.slice(1).map((l) => l.split('\t'));
    expect(rows.length).toBe(2);
    for (const [file, prob, label] of rows) {
      expect(images).toContain(file);
      // Printed with 4 decimals: only compare where rounding cannot flip the side of the threshold.
      if (Math.abs(Number(prob) - metrics.threshold) > 1e-4) expect(label).toBe(Number(prob) >= metrics.threshold ? 'PNEUMONIA' : 'NORMAL');
    }
    expect(p.err.join('\n')).toMatch(new RegExp(`threshold ${metrics.threshold.toFixed(4)} from .*metrics.json`));
    expect(p.err.join('\n')).toMatch(/broken\.jpeg: cannot classify: /);
    expect(p.err.join('\n')).toMatch(/1 of 3 file\(s\) could not be classified/);
    const overlays = fs.readdirSync(gradcamDir);
    expect(overlays.length).toBe(2);
    const meta = await sharp(path.join(gradcamDir, overlays[0])).metadata();
    expect(meta.format).toBe('png');
  });

  it('bad flag values and missing data give one clear line and a non-zero exit, no stack trace', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['--epochs', 'ten'], 2, /--epochs.*whole number/],
      [['--augment', 'zoom=9'], 2, /--augment/],
      [['--threshold', 'best'], 2, /youden, recall=0.97 or fixed=0.5/],
      [['--variant', 'huge'], 2, /--variant.*seed, small/],
      [['--data', path.join(tmp, 'missing'), '--out', runsDir], 1, /No dataset at .*missing/],
      [['--resume', path.join(tmp, 'missing-run')], 1, /no config\.json/],
      [['--resume', tmp, '--image-size', '64'], 2, /--resume keeps the run's --image-size/],
      [['--normalize', 'clahe'], 2, /--normalize.*none, standardize, equalize/],
      [['--tta', '9', '--data', dataDir, '--out', runsDir], 1, /test-time augmentation takes 1 to 8 views/],
      [['--label-smoothing', '1'], 2, /--label-smoothing.*\[0, 1\)/],
      [['--swa-from', 'half'], 2, /--swa-from.*'second-half'/],
      [['--data', dataDir, '--out', runsDir, '--swa-from', '3', ...quick], 1, /--swa-from 3 starts after the last epoch \(1\)/],
      [['--data', dataDir, '--out', runsDir, '--monitor', 'val_time_loss', ...quick], 1, /needs an out-of-time validation split/],
    ];
    for (const [argv, code, message] of cases) {
      const c = capture();
      expect(await runMain(argv, c.io, { handleSigint: false }), argv.join(' ')).toBe(code);
      const text = c.err.join('\n');
      expect(text).toMatch(message);
      expect(text).not.toMatch(/\n\s+at /);
    }
  });

  it('npm run evaluate scores runs again without writing to them: an ensemble of one split, stress, JSON', async () => {
    const evalRuns = path.join(tmp, 'eval-runs');
    const train = async (name: string, extra: string[]) => {
      const c = capture();
      const argv = ['--data', dataDir, '--out', evalRuns, '--name', name, ...quick, ...extra];
      expect(await runMain(argv, c.io, { handleSigint: false }), c.err.join('\n')).toBe(0);
      return path.join(
        evalRuns,
        fs.readdirSync(evalRuns).find((d) => d.endsWith(name))!,
      );
    };
    const a = await train('a', [
      '--seed',
      '1',
      '--split-seed',
      '5',
      '--normalize',
      'equalize',
      '--label-smoothing',
      '0.1',
      '--mixup',
      '0.2',
    ]);
    const b = await train('b', ['--seed', '2', '--split-seed', '5', '--augment', 'gamma=0.3,blur=1,noise=0.02', '--tta', '2']);
    const other = await train('c', ['--seed', '3']);
    expect(JSON.parse(fs.readFileSync(path.join(a, 'config.json'), 'utf8')).config).toMatchObject({
      normalize: 'equalize',
      split: { seed: 5 },
      train: { seed: 1, labelSmoothing: 0.1, mixup: 0.2 },
    });
    expect(JSON.parse(fs.readFileSync(path.join(b, 'metrics.json'), 'utf8')).tta).toBe(2);
    const before = fs.readdirSync(a).map((f) => [f, fs.statSync(path.join(a, f)).mtimeMs]);

    const { main: evaluateMain } = await import('../src/cli/evaluate');
    const json = path.join(tmp, 'ensemble.json');
    const c = capture();
    expect(await evaluateMain([a, b, '--stress', '--calibrate', '--threshold', 'fixed=0.5', '--json', json], c.io), c.err.join('\n')).toBe(
      0,
    );
    const report = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(report.runs).toEqual([a, b]);
    expect(report.threshold).toBe(0.5);
    expect(report.parts.test.count).toBe(16);
    expect(report.stress.map((r: { shift: string }) => r.shift)).toContain('gamma 0.8');
    // Temperature scaling is fitted where the threshold was chosen; on those films it cannot raise the log loss.
    expect(report.calibration.fittedOn).toBe('pooled');
    expect(report.calibration.temperature).toBeGreaterThan(0);
    expect(Object.keys(report.calibration.parts)).toEqual(expect.arrayContaining(['val', 'test']));
    expect(report.calibration.parts.val.after.logLoss).toBeLessThanOrEqual(report.calibration.parts.val.before.logLoss + 0.02);
    expect(c.out.join('\n')).toMatch(/temperature scaling: T = [\d.]+ \(fitted on pooled/);
    expect(c.out.join('\n')).toMatch(/Ensemble of 2 runs: threshold 0.500 \(fixed=0.5 on pooled\)/);
    expect(fs.readdirSync(a).map((f) => [f, fs.statSync(path.join(a, f)).mtimeMs])).toEqual(before);

    const mismatch = capture();
    expect(await evaluateMain([a, other], mismatch.io)).toBe(1);
    expect(mismatch.err.join('\n')).toMatch(/was split differently .* same --split-seed/);
  });

  it('predict without any run explains how to get one', async () => {
    const c = capture();
    expect(await predictMain(['--runs', path.join(tmp, 'no-runs'), 'x.jpeg'], c.io)).toBe(1);
    expect(c.err.join('\n')).toMatch(/No trained model under .*no-runs; train one with 'npm start'/);
  });
});

describe('resolveDataDir', () => {
  it('prefers --data, then $PNEUMO_DATA, then data/chest_xray, then the demo set (saying so)', async () => {
    const c = capture();
    expect(await resolveDataDir('x', c.io, { PNEUMO_DATA: 'y' })).toBe('x');
    expect(await resolveDataDir(undefined, c.io, { PNEUMO_DATA: 'y' })).toBe('y');
    const cwd = process.cwd();
    const root = path.join(tmp, 'cwd');
    fs.mkdirSync(path.join(root, 'data', 'demo', 'train'), { recursive: true });
    process.chdir(root);
    try {
      expect(await resolveDataDir(undefined, c.io, {})).toBe(path.join('data', 'demo'));
      expect(c.out.join('\n')).toMatch(/Using the synthetic demo dataset in data\/demo/);
      fs.mkdirSync(path.join(root, 'data', 'chest_xray'));
      expect(await resolveDataDir(undefined, c.io, {})).toBe(path.join('data', 'chest_xray'));
    } finally {
      process.chdir(cwd);
    }
  });
});
