import { describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { applyOverrides, describeParams, notebookParams, notebookPaths } from '../src/notebooks/params';
import { injectParameters, injectedCellSource, INJECTED_TAG, parametersCellIndex, type NotebookJson } from '../src/notebooks/exec';
import { DEFAULT_PIPELINE } from '../src/pipeline';
import { compareRuns, comparisonNotes, frameRows, groupIfVaried } from '../src/runs/compare';
import { readRun } from '../src/runs/read';
import { notebookTrainConfig } from '../src/notebooks/steps';

describe('parameters: the cell wins when run by hand', () => {
  it('PNEUMO_* applies on the first execution only; a re-run keeps the typed value and says the variable was ignored', () => {
    const saved = process.env.PNEUMO_WARMUP_EPOCHS;
    process.env.PNEUMO_WARMUP_EPOCHS = '2';
    try {
      const first = notebookParams({ warmupEpochs: 10, warmupName: 'a' });
      expect(first.warmupEpochs).toBe(2);
      expect(describeParams(first)).toMatch(/warmupEpochs\s+2\s+\(from PNEUMO_WARMUP_EPOCHS\)/);
      const rerun = notebookParams({ warmupEpochs: 7, warmupName: 'a' });
      expect(rerun.warmupEpochs).toBe(7);
      expect(describeParams(rerun)).toMatch(
        /warmupEpochs\s+7\s+\(PNEUMO_WARMUP_EPOCHS="2" ignored: the cell was re-run by hand, its value wins\)/,
      );
    } finally {
      if (saved === undefined) delete process.env.PNEUMO_WARMUP_EPOCHS;
      else process.env.PNEUMO_WARMUP_EPOCHS = saved;
    }
  });

  it('applyOverrides (the injected cell) overrides in place, keeps types, lists what the notebook does not declare', () => {
    const params = notebookParams({ epochs: 10, augment: 'default', limit: null as number | null }, {});
    const lines: string[] = [];
    applyOverrides(params, { epochs: 2, limit: 50, data: '/x' }, (l) => lines.push(l));
    expect(params).toEqual({ epochs: 2, augment: 'default', limit: 50 });
    expect(lines).toEqual(['injected parameters: epochs=2, limit=50', '  not parameters of this notebook (ignored): data']);
    expect(describeParams(params)).toMatch(/epochs\s+2\s+\(from the injected-parameters cell\)/);
    expect(() => applyOverrides(params, { epochs: 'ten' }, () => undefined)).toThrow(/PNEUMO_EPOCHS="ten" is not a number/);
  });

  it('notebookPaths: runs under out/runs; a relative runDir is relative to out, not the repository', () => {
    const p = notebookPaths('/w/out', 'mine');
    expect(p.runsDir).toBe('/w/out/runs');
    expect(p.runDir).toBe('/w/out/mine');
    expect(notebookPaths('/w/out', '').runDir).toBeUndefined();
  });
});

describe('notebookTrainConfig', () => {
  const split = { train: [], val: [], test: [], seed: 3, testSource: 'carved' as const, root: '/data/x' };
  const paths = notebookPaths(path.join(os.tmpdir(), 'pneumo-nbcfg-never-written'));
  const params = { imageSize: 64, model: 'small', epochs: 4, batchSize: 8, learningRate: 0.01, augment: 'none', patience: 2, seed: 1 };

  it('takes swaFrom as the parameters cell or a PNEUMO_SWA_FROM text gives it, and names the parameter when it is wrong', () => {
    expect(notebookTrainConfig(params, split, paths).train.swaFrom).toBe(DEFAULT_PIPELINE.train.swaFrom);
    expect(notebookTrainConfig({ ...params, swaFrom: 'second-half' }, split, paths).train.swaFrom).toBe('second-half');
    expect(notebookTrainConfig({ ...params, swaFrom: '3' }, split, paths).train.swaFrom).toBe(3);
    expect(notebookTrainConfig({ ...params, swaFrom: 0 }, split, paths).train.swaFrom).toBe(0);
    expect(() => notebookTrainConfig({ ...params, swaFrom: 'half' }, split, paths)).toThrow(/Parameter swaFrom: expected a whole epoch/);
  });
});

describe('injectParameters', () => {
  const nb = (): NotebookJson => ({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {},
    cells: [
      { cell_type: 'markdown', source: '# title' },
      { cell_type: 'code', source: 'const params = notebookParams({ epochs: 10 });', metadata: { tags: ['parameters'] } },
      { cell_type: 'code', source: 'train(params)' },
    ],
  });

  it('puts one tagged cell right after the parameters cell, replacing an earlier injection; the original is untouched', () => {
    const original = nb();
    const once = injectParameters(original, { epochs: 2 });
    expect(once.cells.map((c) => c.metadata?.tags?.[0] ?? c.cell_type)).toEqual(['markdown', 'parameters', INJECTED_TAG, 'code']);
    expect(once.cells[2].source).toBe(injectedCellSource({ epochs: 2 }));
    expect(once.cells[2].source).toContain('applyInjectedParameters(params, {"epochs":2});');
    const twice = injectParameters(once, { epochs: 3 });
    expect(twice.cells.filter((c) => c.metadata?.tags?.includes(INJECTED_TAG)).length).toBe(1);
    expect(twice.cells[2].source).toContain('{"epochs":3}');
    expect(original.cells.length).toBe(3);
  });

  it('a notebook without a parameters cell is an error naming it', () => {
    const bare = { ...nb(), cells: [{ cell_type: 'code', source: '1 + 1' }] };
    expect(() => parametersCellIndex(bare, 'x.ipynb')).toThrow(/x\.ipynb has no parameters cell/);
  });
});

describe('comparison table', () => {
  /** A run folder with the files the readers need, written as the pipeline writes them. */
  function fakeRun(out: string, name: string, lr: number, valLoss: number[], testAuc: number): string {
    const dir = path.join(out, name);
    fs.mkdirSync(dir, { recursive: true });
    const config = { ...DEFAULT_PIPELINE, train: { ...DEFAULT_PIPELINE.train, learningRate: lr } };
    fs.writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ config, backend: 'cpu', dataRoot: '/d', createdAt: `2026-12-01T10:00:0${name.length % 10}Z`, tfjs: '4' }),
    );
    const history = valLoss.map((v, i) => ({ epoch: i + 1, loss: 0.7, acc: 0.5, val_loss: v, val_acc: 0.6, val_auc: 0.7, lr, seconds: 1 }));
    fs.writeFileSync(path.join(dir, 'history.json'), JSON.stringify(history));
    const split = (auc: number) => ({
      accuracy: 0.8,
      precision: 0.8,
      recall: 0.9,
      specificity: 0.7,
      f1: 0.85,
      auc,
      averagePrecision: 0.8,
      count: 10,
      confusion: { tp: 1, fp: 1, tn: 1, fn: 1 },
      roc: { fpr: [0, 1], tpr: [0, 1], thresholds: [null, 0] },
      pr: { precision: [1], recall: [0], thresholds: [] },
    });
    fs.writeFileSync(
      path.join(dir, 'metrics.json'),
      JSON.stringify({
        schema: 1,
        threshold: 0.5,
        thresholdRule: { kind: 'youden' },
        val: split(0.8),
        test: split(testAuc),
        bestEpoch: 1,
        epochsRun: valLoss.length,
        imageSize: 150,
        writtenBy: 'test',
      }),
    );
    return dir;
  }

  it("ranks by the best epoch's validation loss, even when another run has the better test AUC", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-compare-'));
    try {
      const a = readRun(fakeRun(out, 'a-lr1e-3', 1e-3, [0.6, 0.4, 0.5], 0.7));
      const b = readRun(fakeRun(out, 'b-lr3e-4', 3e-4, [0.55, 0.45], 0.99));
      const c = compareRuns([b, a], DEFAULT_PIPELINE);
      const rows = frameRows(c.frame);
      expect(rows.map((r) => [r.rank, r.run, r.lr, r['best epoch'], r['val loss'], r['test AUC']])).toEqual([
        [1, 'a-lr1e-3', 0.001, 2, 0.4, 0.7],
        [2, 'b-lr3e-4', 0.0003, 2, 0.45, 0.99],
      ]);
      expect(c.best!.name).toBe('a-lr1e-3');
      // What notebook 06 prints under the table.
      expect(comparisonNotes(c, [{ dir: 'x', message: 'no config.json' }])).toEqual([
        'skipped x: no config.json',
        'best by validation: a-lr1e-3',
      ]);
      expect(comparisonNotes(compareRuns([], DEFAULT_PIPELINE))).toEqual(['no run has a finished epoch yet']);
      expect(c.varied).toEqual(['lr']);
      expect(groupIfVaried(c, 'augment')).toMatch(/'augment' does not differ between these runs \(varied: lr\)/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
