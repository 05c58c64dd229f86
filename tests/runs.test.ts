import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DEFAULT_PIPELINE, type PipelineConfig } from '../src/pipeline';
import { parseAugment } from '../src/augment';
import {
  RUN_FILES,
  RunLockedError,
  acquireRunLock,
  changedHyperparameters,
  createRunDir,
  parseMetrics,
  readLock,
  readMetrics,
  resolveRun,
  runLabel,
} from '../src/runs';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-runs-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cfg = (over: (c: PipelineConfig) => void): PipelineConfig => {
  const c: PipelineConfig = structuredClone(DEFAULT_PIPELINE);
  over(c);
  return c;
};

describe('run naming', () => {
  it('names a run by the hyperparameters that differ from the defaults, or --name', () => {
    expect(runLabel(DEFAULT_PIPELINE, DEFAULT_PIPELINE)).toBe('defaults');
    const quick = cfg((c) => {
      c.variant = 'small';
      c.imageSize = 64;
      c.train.epochs = 2;
      c.train.learningRate = 3e-4;
      c.train.augment = parseAugment('seed');
      c.limit = 150;
    });
    expect(runLabel(quick, DEFAULT_PIPELINE)).toBe('small-64px-e2-lr3e-4-aug-seed-limit150');
    expect(changedHyperparameters(quick, DEFAULT_PIPELINE)).toEqual(['model', 'imageSize', 'epochs', 'lr', 'augment', 'limit']);
    expect(runLabel({ ...quick, name: 'baseline' }, DEFAULT_PIPELINE)).toBe('baseline');
  });

  it('never reuses a folder: two runs in the same second get two folders', () => {
    const when = new Date('2026-12-01T10:00:00Z');
    const a = createRunDir(path.join(tmp, 'same-second'), 'lr1e-3', when);
    const b = createRunDir(path.join(tmp, 'same-second'), 'lr1e-3', when);
    expect(path.basename(a)).toBe('2026-12-01T10-00-00-lr1e-3');
    expect(path.basename(b)).toBe('2026-12-01T10-00-00-lr1e-3-2');
  });

  it('resolveRun takes a path, a folder name or a unique part of one, and lists the runs otherwise', () => {
    const out = path.join(tmp, 'resolve');
    for (const name of ['2026-12-01T10-00-00-lr1e-3', '2026-12-01T10-05-00-lr3e-4']) {
      fs.mkdirSync(path.join(out, name), { recursive: true });
      fs.writeFileSync(path.join(out, name, RUN_FILES.config), '{}');
    }
    expect(resolveRun('lr3e-4', out)).toBe(path.resolve(out, '2026-12-01T10-05-00-lr3e-4'));
    expect(resolveRun(path.join(out, '2026-12-01T10-00-00-lr1e-3'), out)).toBe(path.resolve(out, '2026-12-01T10-00-00-lr1e-3'));
    expect(() => resolveRun('2026-12-01', out)).toThrow(/matches 2 runs .*give more of the name/);
    expect(() => resolveRun('lr1e-2', out)).toThrow(/No run 'lr1e-2'.*runs there: 2026-12-01T10-00-00-lr1e-3/);
  });
});

function sleeper(): { pid: number; stop: () => void } {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  return { pid: child.pid!, stop: () => child.kill() };
}

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

function writeLock(dir: string, pid: number, host = os.hostname()): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, RUN_FILES.lock),
    JSON.stringify({ pid, host, startedAt: '2026-12-01T10:00:00.000Z', command: 'npm start -- --epochs 10' }),
  );
}

describe('run lock', () => {
  it('a run held by a live process is refused with a message naming that process', () => {
    const dir = path.join(tmp, 'live');
    const holder = sleeper();
    try {
      writeLock(dir, holder.pid);
      let error: unknown;
      try {
        acquireRunLock(dir);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(RunLockedError);
      expect((error as Error).message).toMatch(
        new RegExp(
          `being written by process ${holder.pid} on ${os.hostname()} \\(npm start -- --epochs 10, since 2026-12-01T10:00:00.000Z\\)`,
        ),
      );
      expect(readLock(dir)!.pid).toBe(holder.pid); // left alone
    } finally {
      holder.stop();
    }
  });

  it('a lock left by a dead process is stale: taken over, with a note', () => {
    const dir = path.join(tmp, 'stale');
    const pid = deadPid();
    writeLock(dir, pid);
    const lock = acquireRunLock(dir, 'test');
    expect(lock.tookOver).toMatch(new RegExp(`took over a stale lock .* left by process ${pid} .*no longer running`));
    expect(readLock(dir)).toMatchObject({ pid: process.pid, command: 'test' });
    lock.release();
    expect(fs.existsSync(path.join(dir, RUN_FILES.lock))).toBe(false);
  });

  it('a lock from another host cannot be checked and is kept', () => {
    const dir = path.join(tmp, 'other-host');
    writeLock(dir, deadPid(), 'some-other-machine');
    expect(() => acquireRunLock(dir)).toThrow(/on some-other-machine/);
  });

  it('a fresh lock is released and can be taken again', () => {
    const dir = path.join(tmp, 'fresh');
    const a = acquireRunLock(dir, 'first');
    expect(readLock(dir)).toMatchObject({ pid: process.pid, command: 'first' });
    a.release();
    const b = acquireRunLock(dir, 'second');
    expect(b.tookOver).toBeUndefined();
    b.release();
  });
});

const split = (over: Record<string, unknown> = {}) => ({
  accuracy: 0.9,
  precision: 0.9,
  recall: 0.95,
  specificity: 0.8,
  f1: 0.92,
  auc: null,
  averagePrecision: 0.9,
  count: 10,
  confusion: { tp: 5, fp: 1, tn: 3, fn: 1 },
  roc: { fpr: [0, 1], tpr: [0, 1], thresholds: [null, 0] },
  pr: { precision: [1], recall: [0], thresholds: [] },
  ...over,
});
const goodMetrics = () => ({
  schema: 1,
  threshold: 0.4,
  thresholdRule: { kind: 'recall', target: 0.98 },
  val: split(),
  test: split(),
  bestEpoch: 2,
  epochsRun: 2,
  imageSize: 64,
  writtenBy: 'test',
});

describe('metrics.json reader', () => {
  it('reads the schema back, turning JSON nulls into NaN and +Infinity where the writer had them', () => {
    const m = parseMetrics(goodMetrics(), 'm.json');
    expect(Number.isNaN(m.test.auc)).toBe(true);
    expect(m.test.roc.thresholds[0]).toBe(Infinity);
    expect(m.thresholdRule).toEqual({ kind: 'recall', target: 0.98 });
  });

  it('rejects the old notebook-05 shape, naming the file, the field and the fix', () => {
    const file = path.join(tmp, 'old-metrics.json');
    // What 05-evaluate used to write: `rule` as a string, no schema, no thresholdRule, bestEpoch or imageSize.
    fs.writeFileSync(file, JSON.stringify({ threshold: 0.4, rule: 'youden', val: split(), test: split() }));
    expect(() => readMetrics(file)).toThrow(
      new RegExp(
        `${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: schema is undefined, expected 1 \\(it has 'rule' but no 'thresholdRule'.*re-evaluate the run`,
      ),
    );
  });

  // A metrics.json object to break one field of, whatever its type.
  type BrokenMetrics = Record<string, unknown> & { test: Record<string, unknown>; val: Record<string, unknown> };
  it.each([
    [(m: BrokenMetrics) => (m.threshold = 1.5), /field 'threshold' must be a number in \[0, 1\]/],
    [(m: BrokenMetrics) => (m.thresholdRule = { kind: 'best' }), /field 'thresholdRule' .* is not youden/],
    [(m: BrokenMetrics) => delete m.test.f1, /field 'test.f1' is missing or not a number/],
    [(m: BrokenMetrics) => (m.val.confusion = { tp: 1 }), /field 'val.confusion' must hold numbers tp, fp, tn, fn/],
    [(m: BrokenMetrics) => (m.bestEpoch = 'two'), /field 'bestEpoch'/],
    [(m: BrokenMetrics) => (m.averagedEpochs = [0, 'x']), /field 'averagedEpochs' must be a list of whole epochs/],
  ])('a broken field is named: %#', (breakIt, message) => {
    const m = goodMetrics();
    breakIt(m);
    expect(() => parseMetrics(m, 'run/metrics.json')).toThrow(message);
    expect(() => parseMetrics(m, 'run/metrics.json')).toThrow(/^run\/metrics\.json: /);
  });

  it('a missing or non-JSON file says so', () => {
    expect(() => readMetrics(path.join(tmp, 'none.json'))).toThrow(/none\.json is missing or unreadable; evaluate the run first/);
    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, '{"threshold": 0.');
    expect(() => readMetrics(bad)).toThrow(/bad\.json: not valid JSON/);
  });
});
