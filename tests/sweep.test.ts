import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { generateDemoDataset } from '../src/data/demo';
import { DEFAULT_PIPELINE, runPipeline, type PipelineConfig } from '../src/pipeline';
import { main as runMain, sweepPointConfig } from '../src/cli/run';
import { main as compareMain } from '../src/cli/compare';
import { main as runsMain } from '../src/cli/runs';
import { createSweep, parseSweepAxis, readSweep, runSweep, sweepGrid } from '../src/runs/sweep';
import { compareRuns, filterRows, frameRows, groupByHyperparameter, TEST_COLUMNS } from '../src/runs/compare';
import { listRuns, readRun } from '../src/runs/read';
import type { EpochLogs } from '../src/train/train';

let tmp: string;
let dataDir: string;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-sweep-'));
  dataDir = path.join(tmp, 'demo');
  await generateDemoDataset({ outDir: dataDir, perClass: 14, testPerClass: 6, size: 48, seed: 3 });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function base(out: string): PipelineConfig {
  return {
    ...DEFAULT_PIPELINE,
    data: dataDir,
    out,
    imageSize: 32,
    variant: 'small',
    backend: 'wasm',
    cacheDir: null,
    train: { ...DEFAULT_PIPELINE.train, epochs: 2, batchSize: 8 },
    split: { seed: 1, valFraction: 0.25, testFraction: 0.15 },
  };
}

const capture = () => {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
};

describe('sweep grid', () => {
  it('parses axes and makes every combination, first axis slowest; bad specs are named', () => {
    const grid = sweepGrid([parseSweepAxis('lr=1e-3,3e-4'), parseSweepAxis('augment=default,seed')]);
    expect(grid.map((p) => p.key)).toEqual([
      'lr=1e-3 augment=default',
      'lr=1e-3 augment=seed',
      'lr=3e-4 augment=default',
      'lr=3e-4 augment=seed',
    ]);
    expect(grid[1].argv).toEqual(['--lr', '1e-3', '--augment', 'seed']);
    expect(() => parseSweepAxis('lr')).toThrow(/--sweep lr: expected FLAG=V1,V2/);
    expect(() => parseSweepAxis('lr=1e-3,1e-3')).toThrow(/repeated/);
    expect(() => sweepPointConfig(base(tmp), { key: 'lr=fast', argv: ['--lr', 'fast'] })).toThrow(/--sweep lr=fast: .*--lr.*number > 0/);
    expect(sweepPointConfig(base(tmp), grid[3]).train).toMatchObject({ learningRate: 3e-4, augment: { zoom: 0.3, vflip: true } });
  });

  it('a bad sweep on the command line fails before training anything, in one line', async () => {
    const out = path.join(tmp, 'bad-sweep');
    for (const [argv, message] of [
      [['--sweep', 'lr=1e-3,fast'], /--sweep lr=fast: /],
      [['--sweep', 'data=a,b'], /'data' cannot be swept/],
    ] as const) {
      const c = capture();
      expect(await runMain(['--data', dataDir, '--out', out, ...argv], c.io, { handleSigint: false })).toBe(1);
      expect(c.err.join('\n')).toMatch(message);
      expect(c.err.join('\n')).not.toMatch(/\n\s+at /);
    }
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('a sweep killed in the middle and resumed', () => {
  it('keeps the finished run, continues the interrupted one from its checkpoint, trains the rest, ranks on validation', async () => {
    const out = path.join(tmp, 'sweep-runs');
    const axes = [parseSweepAxis('lr=1e-3,3e-4,1e-4')];
    const dir = createSweep(base(out), axes);
    const runner = { configFor: sweepPointConfig, run: runPipeline };

    // The "kill": abort while the second run trains its second epoch (its first epoch is checkpointed).
    const controller = new AbortController();
    let started = 0;
    const killer = {
      onTrainBegin: () => void started++,
      onBatchEnd: (_b: number, _l: unknown, ctx: { history: EpochLogs[] }) =>
        void (started === 2 && ctx.history.length === 1 && controller.abort()),
    };
    const first = await runSweep(dir, runner, { log: () => undefined, progress: false, signal: controller.signal, callbacks: [killer] });
    expect(first.interrupted).toBe(true);
    expect(readSweep(dir).points.map((p) => p.status)).toEqual(['done', 'interrupted', 'pending']);
    const [done, cut] = readSweep(dir).points;
    const doneHistory = fs.statSync(path.join(done.runDir!, 'history.json')).mtimeMs;
    expect(readRun(cut.runDir!).history.map((h) => h.epoch)).toEqual([1]);

    const lines: string[] = [];
    const second = await runSweep(dir, runner, { log: (l) => lines.push(l), progress: false });
    expect(second.interrupted).toBe(false);
    const points = second.manifest.points;
    expect(points.map((p) => p.status)).toEqual(['done', 'done', 'done']);
    expect(lines.join('\n')).toMatch(/3 run\(s\) \(lr 1e-3\/3e-4\/1e-4\); 1 already done/);
    expect(lines.join('\n')).toMatch(/\[2\/3\] lr=3e-4: continuing .* after 1 completed epoch/);
    // The finished run was not touched; the interrupted one kept its folder and went on from epoch 2.
    expect(fs.statSync(path.join(done.runDir!, 'history.json')).mtimeMs).toBe(doneHistory);
    expect(points[1].runDir).toBe(cut.runDir);
    expect(readRun(cut.runDir!).history.map((h) => h.epoch)).toEqual([1, 2]);
    expect(new Set(points.map((p) => p.runDir)).size).toBe(3);
    expect(points.map((p) => readRun(p.runDir!).config.train.learningRate)).toEqual([1e-3, 3e-4, 1e-4]);
    expect(fs.existsSync(path.join(dir, '.lock'))).toBe(false);

    // The comparison: one row per run, sorted on validation loss, lr the only varied column.
    const runs = listRuns(out).runs;
    expect(runs.length).toBe(3);
    const cmp = compareRuns(runs, DEFAULT_PIPELINE);
    expect(cmp.varied).toEqual(['lr']);
    const rows = frameRows(cmp.frame);
    const valLoss = rows.map((r) => r['val loss'] as number);
    expect(valLoss).toEqual([...valLoss].sort((a, b) => a - b));
    expect(rows.map((r) => r.rank)).toEqual([1, 2, 3]);
    expect(cmp.best!.name).toBe(rows[0].run);
    for (const c of TEST_COLUMNS) expect(typeof rows[0][c]).toBe('number');
    expect(frameRows(filterRows(cmp.frame, 'lr', '0.0003')).map((r) => r.run)).toEqual([path.basename(points[1].runDir!)]);
    const grouped = frameRows(groupByHyperparameter(cmp.frame, 'lr'));
    expect(grouped.map((g) => g.lr).sort()).toEqual([1e-4, 3e-4, 1e-3].sort());
    expect(grouped.every((g) => g.run_count === 1)).toBe(true);
    expect(() => groupByHyperparameter(cmp.frame, 'augment')).toThrow(/'augment' is not a column .*differ between the runs/);

    // The CLI shows the same table.
    const c = capture();
    expect(await compareMain(['--out', out, 'lr1e-4', 'lr3e-4'], c.io)).toBe(0);
    expect(c.out.join('\n')).toMatch(/Ranked by val loss .*validation only/);
    expect(c.out.join('\n')).toMatch(/Best by validation: /);
    const missing = capture();
    expect(await compareMain(['--out', out, 'lr9'], missing.io)).toBe(1);
    expect(missing.err.join('\n')).toMatch(/compare: No run 'lr9'/);
  }, 120_000);

  it('npm start --sweep runs the grid and ends with the table; npm run runs lists, filters and groups it', async () => {
    const out = path.join(tmp, 'cli-sweep');
    const c = capture();
    const argv = [
      '--data',
      dataDir,
      '--out',
      out,
      '--epochs',
      '1',
      '--image-size',
      '32',
      '--model',
      'small',
      '--backend',
      'wasm',
      '--limit',
      '8',
      '--sweep',
      'lr=1e-3,3e-4',
    ];
    expect(await runMain(argv, c.io, { handleSigint: false })).toBe(0);
    const text = c.out.join('\n');
    expect(text).toMatch(/Sweep .*-sweep-lr: 2 of 2 run\(s\) done/);
    expect(text).toMatch(/^rank\s+run\s+lr\s+status/m);
    expect(text).toMatch(/Best by validation: /);
    const [sweepDir] = fs.readdirSync(out);
    expect(readSweep(path.join(out, sweepDir)).points.map((p) => [p.key, p.status])).toEqual([
      ['lr=1e-3', 'done'],
      ['lr=3e-4', 'done'],
    ]);
    // Continuing a finished sweep trains nothing and prints the table again; extra flags are refused.
    const again = capture();
    expect(await runMain(['--resume', path.join(out, sweepDir)], again.io, { handleSigint: false })).toBe(0);
    expect(again.out.join('\n')).toMatch(/2 already done/);
    expect(again.out.join('\n')).not.toMatch(/Training /);
    const extra = capture();
    expect(await runMain(['--resume', path.join(out, sweepDir), '--epochs', '3'], extra.io, { handleSigint: false })).toBe(2);
    expect(extra.err.join('\n')).toMatch(/--resume of a sweep continues it with its own settings; drop --epochs/);

    const listed = capture();
    expect(await runsMain(['--out', out, '--where', 'status=evaluated', '--group-by', 'lr'], listed.io)).toBe(0);
    const table = listed.out.join('\n');
    expect(table.match(/^\d+\s+\S+-small-32px-e1-/gm)?.length).toBe(2);
    expect(table).toMatch(/Mean validation numbers per lr:\nlr\s+run_count\s+val loss_mean/);
  }, 120_000);
});
