import { afterAll, describe, expect, it } from 'vitest';
import {
  binIntensities,
  classCountRows,
  classCountsFigure,
  parametersPerLayerFigure,
  confusionMatrixFigure,
  intensityHistogramFigure,
  learningRateFigure,
  metricsComparisonFigure,
  nearestThresholdIndex,
  probabilityHistogramFigure,
  precisionRecallFigure,
  rocFigure,
  trainingHistoryFigure,
  historySeries,
  rocOverlayFigure,
  runCurvesFigure,
} from '../src/viz/figures';
import { figureHtml, imagesHtml, plotlyBundleTag, PLOTLY_SCRIPT_ID, resetPlotlyInclusion, showFigure, tableHtml } from '../src/viz/display';
import { describeParams, notebookParams, paramEnvName, parseParam } from '../src/notebooks/params';
import { classIntensityHistograms, classThumbnails, imageStatsRows, mistakeTable, sampleByClass } from '../src/viz/galleries';
import type { Dataset, ImageRecord } from '../src/types';
import type { PredictionRow } from '../src/evaluate';
import sharp from 'sharp';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

describe('figure builders', () => {
  it('class counts: one bar trace per class, x = splits, zero for a missing class', () => {
    const fig = classCountsFigure([
      { split: 'train', counts: { NORMAL: 10, PNEUMONIA: 30 } },
      { split: 'test', counts: { PNEUMONIA: 4 } },
    ]);
    expect(fig.data.map((t) => t.name)).toEqual(['NORMAL', 'PNEUMONIA']);
    expect(fig.data[0]).toMatchObject({ type: 'bar', x: ['train', 'test'], y: [10, 0], text: ['10', '0'] });
    expect(fig.data[1].y).toEqual([30, 4]);
    expect(fig.layout.barmode).toBe('group');
  });

  it('intensity histogram: bins sum to the pixel count and the figure plots fractions', () => {
    const pixels = Uint8Array.from([0, 7, 8, 255, 255, 128]);
    const counts = binIntensities(pixels, 32);
    expect(counts).toHaveLength(32);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(6);
    expect(counts[0]).toBe(2); // 0 and 7 share the first 8-wide bin
    expect(counts[31]).toBe(2);
    const fig = intensityHistogramFigure([{ label: 'NORMAL', counts }]);
    const y = fig.data[0].y as number[];
    expect(y.reduce((a, b) => a + b, 0)).toBeCloseTo(1);
    expect(fig.data[0].x![0]).toBe(4); // bin centre
  });

  it('training history: loss on the first axis, accuracy on the second, val lines only when present', () => {
    const fig = trainingHistoryFigure({ epoch: [1, 2], loss: [0.7, 0.5], acc: [0.6, 0.8], valLoss: [0.8, 0.6], valAcc: [0.5, 0.7] });
    expect(fig.data.map((t) => t.name)).toEqual(['train loss', 'val loss', 'train accuracy', 'val accuracy']);
    expect(fig.data[0].yaxis).toBeUndefined();
    expect(fig.data[2]).toMatchObject({ xaxis: 'x2', yaxis: 'y2', y: [0.6, 0.8] });
    expect(fig.data[1].y).toEqual([0.8, 0.6]);
    const trainOnly = trainingHistoryFigure({ epoch: [1], loss: [0.7], acc: [0.6] });
    expect(trainOnly.data).toHaveLength(2);
  });

  it('learning rate: a log-scale step line per epoch', () => {
    const fig = learningRateFigure([1, 2, 3], [1e-3, 1e-3, 5e-4]);
    expect(fig.data[0]).toMatchObject({ x: [1, 2, 3], y: [1e-3, 1e-3, 5e-4] });
    expect(fig.layout.yaxis).toMatchObject({ type: 'log', tickmode: 'array', tickvals: [5e-4, 1e-3], ticktext: ['5e-4', '1e-3'] });
    // A schedule of many rates keeps Plotly's decades instead of a tick per rate.
    const cosine = learningRateFigure([1, 2, 3, 4, 5, 6, 7, 8], [1e-3, 9.6e-4, 8.5e-4, 6.9e-4, 5e-4, 3.1e-4, 1.5e-4, 3.8e-5]);
    expect(cosine.layout.yaxis).toMatchObject({ type: 'log', dtick: 'D2' });
    expect(cosine.layout.yaxis).not.toHaveProperty('tickvals');
  });

  it('confusion matrix: heatmap z = matrix, one annotation per cell with count and row percentage', () => {
    const fig = confusionMatrixFigure(
      [
        [50, 10],
        [5, 135],
      ],
      ['NORMAL', 'PNEUMONIA'],
    );
    expect(fig.data[0]).toMatchObject({
      type: 'heatmap',
      z: [
        [50, 10],
        [5, 135],
      ],
      x: ['NORMAL', 'PNEUMONIA'],
    });
    const notes = fig.layout.annotations!;
    expect(notes).toHaveLength(4);
    const fn = notes.find((a) => a.y === 'PNEUMONIA' && a.x === 'NORMAL')!;
    expect(fn.text).toBe('5<br>(3.6%)'); // 5 of 140 actual PNEUMONIA
    const tp = notes.find((a) => a.y === 'PNEUMONIA' && a.x === 'PNEUMONIA')!;
    expect(tp.font).toMatchObject({ color: 'white' }); // dark cell, light text
  });

  it('ROC: AUC in the legend, chance diagonal, marker at the point nearest the threshold', () => {
    const roc = { fpr: [0, 0, 0.5, 1], tpr: [0, 0.5, 1, 1], thresholds: [Infinity, 0.9, 0.4, 0.1] };
    const fig = rocFigure(roc, 0.875, 0.45);
    expect(fig.data[0].name).toBe('ROC (AUC = 0.875)');
    expect(fig.data[1].x).toEqual([0, 1]);
    expect(fig.data[2]).toMatchObject({ x: [0.5], y: [1], name: 'threshold 0.450' });
    expect(nearestThresholdIndex(roc.thresholds, 0.95)).toBe(1);
  });

  it('precision-recall: recall on x, base rate line, threshold marker', () => {
    const pr = { recall: [1, 0.5, 0], precision: [0.6, 1, 1], thresholds: [0.1, 0.7, 0.9] };
    const fig = precisionRecallFigure(pr, 0.7, 0.6);
    expect(fig.data[0]).toMatchObject({ x: [1, 0.5, 0], y: [0.6, 1, 1] });
    expect(fig.data[1].name).toBe('base rate 0.60');
    expect(fig.data[2]).toMatchObject({ x: [0.5], y: [1] });
    expect(precisionRecallFigure(pr, 0.7).data).toHaveLength(2);
  });

  it('metrics comparison: percentages, missing metrics left out per source', () => {
    const fig = metricsComparisonFigure([
      { name: 'this run', values: { accuracy: 0.9, auc: 0.95 } },
      { name: 'seed notebook', values: { accuracy: 0.91, auc: null } },
    ]);
    expect(fig.data[0]).toMatchObject({ x: ['accuracy', 'auc'], text: ['90.0', '95.0'] });
    expect(fig.data[1].x).toEqual(['accuracy']);
    expect(fig.data[1].y![0]).toBeCloseTo(91);
  });
});

describe('probability histogram', () => {
  it('bins probabilities per true class and marks the threshold', () => {
    const fig = probabilityHistogramFigure(
      [
        { label: 'NORMAL', probability: 0.01 },
        { label: 'NORMAL', probability: 0.6 },
        { label: 'PNEUMONIA', probability: 0.99 },
        { label: 'PNEUMONIA', probability: 1 },
      ],
      0.5,
      10,
    );
    expect(fig.data.map((t) => t.name)).toEqual(['actual NORMAL', 'actual PNEUMONIA']);
    expect((fig.data[0].y as number[])[0]).toBe(1);
    expect((fig.data[0].y as number[])[6]).toBe(1);
    expect((fig.data[1].y as number[])[9]).toBe(2); // probability 1 goes in the last bin
    expect(fig.layout.shapes![0]).toMatchObject({ x0: 0.5, x1: 0.5 });
  });
});

describe('display helpers', () => {
  const fig = classCountsFigure([{ split: 'train', counts: { NORMAL: 1 } }]);

  it('embeds plotly.js once per kernel process, shadowing require.js define', () => {
    resetPlotlyInclusion();
    const sent: string[] = [];
    const sink = { html: (s: string) => sent.push(s) };
    showFigure(fig, sink);
    showFigure(fig, sink);
    expect(sent).toHaveLength(2);
    expect(sent[0]).toContain(`id="${PLOTLY_SCRIPT_ID}"`);
    expect(sent[0]).toContain('var define = undefined');
    expect(sent[0].length).toBeGreaterThan(1_000_000);
    expect(sent[1]).not.toContain(PLOTLY_SCRIPT_ID);
    expect(sent[1].length).toBeLessThan(5_000);
    // distinct container ids, so two charts in one page never collide
    const ids = sent.map((s) => /<div id="([^"]+)"/.exec(s)![1]);
    expect(new Set(ids).size).toBe(2);
    resetPlotlyInclusion();
    showFigure(fig, sink);
    expect(sent[2]).toContain(PLOTLY_SCRIPT_ID);
  });

  it('the plotly bundle contains no literal </script> and figure JSON cannot break out of its script', () => {
    expect(plotlyBundleTag().match(/<\/script/gi)).toHaveLength(1);
    const evil = classCountsFigure([{ split: '</script><b>x', counts: { NORMAL: 1 } }]);
    const html = figureHtml(evil, { includePlotly: false, id: 'f1' });
    expect(html.match(/<\/script/gi)).toHaveLength(1);
    expect(html).toContain('\\u003c/script>');
  });

  it('image grid: one data-URI <img> per item with escaped captions', () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47]);
    const html = imagesHtml(
      [
        { png, caption: 'a<b' },
        { png, caption: 'c' },
      ],
      2,
    );
    expect(html.match(/<img /g)).toHaveLength(2);
    expect(html).toContain(`data:image/png;base64,${png.toString('base64')}`);
    expect(html).toContain('a&lt;b');
    expect(html).toContain('repeat(2,');
  });

  it('tables from rows and from a danfo-like frame (non-default index shown)', () => {
    const fromRows = tableHtml([{ split: 'train', n: 3, frac: 0.123456 }], 'Sizes');
    expect(fromRows).toContain('<caption');
    expect(fromRows).toContain('<td style="text-align:right;padding:2px 10px">0.1235</td>');
    const frame = tableHtml({
      columns: ['a', 'b'],
      values: [
        [1, null],
        [2, 'x'],
      ],
      index: ['r1', 'r2'],
    });
    expect(frame.match(/<tr>/g)).toHaveLength(3);
    expect(frame).toContain('>r1</th>');
    expect(frame).toContain('–');
  });

  it('renders a real danfo DataFrame', () => {
    const dfd = require('danfojs-node');
    const df = new dfd.DataFrame([{ split: 'train', NORMAL: 3, PNEUMONIA: 5 }]);
    const html = tableHtml(df);
    expect(html).toContain('>PNEUMONIA</th>');
    expect(html).toContain('>5</td>');
    expect(html).not.toContain('<th style="text-align:right;padding:2px 10px">0</th>'); // default index hidden
  }, 30_000);
});

describe('notebook parameters', () => {
  it('maps camelCase names to PNEUMO_ variables', () => {
    expect(paramEnvName('imageSize')).toBe('PNEUMO_IMAGE_SIZE');
    expect(paramEnvName('runDir')).toBe('PNEUMO_RUN_DIR');
    expect(paramEnvName('data')).toBe('PNEUMO_DATA');
  });

  it('overrides defaults from the environment, keeping types', () => {
    const params = notebookParams(
      { data: 'data/demo', epochs: 10, augment: true, limit: null as number | null, seed: 42 },
      { PNEUMO_EPOCHS: '2', PNEUMO_AUGMENT: 'false', PNEUMO_LIMIT: '64', PNEUMO_DATA: '/x' },
    );
    expect(params).toEqual({ data: '/x', epochs: 2, augment: false, limit: 64, seed: 42 });
    expect(typeof params.epochs).toBe('number');
  });

  it('rejects values that do not parse, naming the variable', () => {
    expect(() => notebookParams({ epochs: 10 }, { PNEUMO_EPOCHS: 'ten' })).toThrow(/PNEUMO_EPOCHS="ten" is not a number/);
    expect(() => parseParam('augment', 'maybe', true)).toThrow(/PNEUMO_AUGMENT/);
    expect(parseParam('limit', '', null)).toBeNull();
  });

  it('describes which values came from the environment', () => {
    const text = describeParams({ epochs: 2, seed: 1 }, { PNEUMO_EPOCHS: '2' });
    expect(text).toMatch(/epochs\s+2\s+\(from PNEUMO_EPOCHS\)/);
    expect(text).not.toMatch(/seed.*from/);
  });
});

describe('run comparison figures', () => {
  const history = (base: number) =>
    historySeries([1, 2].map((epoch) => ({ epoch, loss: base / epoch, acc: 0.5, val_loss: base / epoch + 0.1, val_acc: 0.6, lr: 1e-3 })));

  it('curves: per run a train and a val line on loss and on accuracy, one colour per run, val dashed', () => {
    const fig = runCurvesFigure([
      { name: 'lr1e-3', history: history(1) },
      { name: 'lr3e-4', history: history(2) },
    ]);
    expect(fig.data.map((t) => t.name)).toEqual([
      'lr1e-3 · train loss',
      'lr1e-3 · val loss',
      'lr1e-3 · train acc',
      'lr1e-3 · val acc',
      'lr3e-4 · train loss',
      'lr3e-4 · val loss',
      'lr3e-4 · train acc',
      'lr3e-4 · val acc',
    ]);
    expect(fig.data[1].y).toEqual([1.1, 0.6]);
    expect(fig.data[1].line).toMatchObject({ dash: 'dash' });
    expect(fig.data[2].yaxis).toBe('y2');
    expect(new Set(fig.data.slice(0, 4).map((t) => t.line!.color)).size).toBe(1);
    expect(fig.data[0].line!.color).not.toBe(fig.data[4].line!.color);
  });

  it('ROC overlay: one curve per run with its AUC in the legend, and the chance line', () => {
    const fig = rocOverlayFigure([
      { name: 'a', roc: { fpr: [0, 0.5, 1], tpr: [0, 0.9, 1] }, auc: 0.9123 },
      { name: 'b', roc: { fpr: [0, 1], tpr: [0, 1] }, auc: NaN },
    ]);
    expect(fig.data.map((t) => t.name)).toEqual(['a (AUC 0.912)', 'b (AUC -)', 'chance']);
    expect(fig.data[0].x).toEqual([0, 0.5, 1]);
  });
});

describe("notebook 01's sample, statistics, gray levels and thumbnails (viz/galleries)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'galleries-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  /** A 20 x 10 flat grey JPEG (or PNG) per film: its statistics are known. */
  const film = async (name: string, label: 'NORMAL' | 'PNEUMONIA', grey: number, patient: string): Promise<ImageRecord> => {
    const file = path.join(dir, name);
    await sharp({ create: { width: 20, height: 10, channels: 3, background: { r: grey, g: grey, b: grey } } })
      .png()
      .toFile(file);
    return { path: file, label, patient, source: 'train' };
  };

  it('draws a seeded sample per class and reads what 01 shows from it', async () => {
    const images = [
      await film('n1.png', 'NORMAL', 40, 'p1'),
      await film('n2.png', 'NORMAL', 60, 'p2'),
      await film('n3.png', 'NORMAL', 80, 'p3'),
      await film('p1.png', 'PNEUMONIA', 200, 'p4'),
    ];
    const ds: Dataset = { root: dir, sources: ['train'], images, skipped: [] };
    const samples = sampleByClass(ds, 2, 7);
    expect(samples.NORMAL).toHaveLength(2);
    expect(samples.NORMAL.every((r) => r.label === 'NORMAL')).toBe(true);
    expect(samples.PNEUMONIA.map((r) => r.patient)).toEqual(['p4']);
    expect(sampleByClass(ds, 2, 7)).toEqual(samples); // the seed fixes the sample

    const rows = await imageStatsRows(samples);
    expect(rows.map((r) => `${r.class} ${r.measure}`)).toEqual([
      'NORMAL width',
      'NORMAL height',
      'NORMAL mean gray',
      'NORMAL gray std',
      'PNEUMONIA width',
      'PNEUMONIA height',
      'PNEUMONIA mean gray',
      'PNEUMONIA gray std',
    ]);
    expect(rows[0]).toMatchObject({ images: 2, min: 20, max: 20 });
    expect(rows[6]).toMatchObject({ images: 1, min: 200, max: 200 });
    const greys = samples.NORMAL.map((r) => ({ 'n1.png': 40, 'n2.png': 60, 'n3.png': 80 })[path.basename(r.path)]!);
    expect(rows[2].mean).toBeCloseTo((greys[0] + greys[1]) / 2, 0);

    const histograms = await classIntensityHistograms(samples, 8, 32);
    expect(histograms.map((h) => h.label)).toEqual(['NORMAL', 'PNEUMONIA']);
    // Every pixel of a flat film falls in its grey's bin (grey / 8 of 32): 64 pixels a film at 8 x 8.
    expect(histograms[1].counts[Math.floor(200 / 8)]).toBe(64);
    expect(histograms[0].counts.reduce((a, b) => a + b, 0)).toBe(128);

    const thumbs = await classThumbnails(samples, 1, 16);
    expect(thumbs.map((t) => t.caption)).toEqual([`NORMAL · ${samples.NORMAL[0].patient}`, 'PNEUMONIA · p4']);
    expect((await sharp(thumbs[0].png).metadata()).format).toBe('png');
  });

  it('counts rows for the class chart, parameters per layer, and the mistakes table', () => {
    expect(classCountRows([{ folder: 'train', NORMAL: 3, PNEUMONIA: 9, total: 12 }], 'folder')).toEqual([
      { split: 'train', counts: { NORMAL: 3, PNEUMONIA: 9 } },
    ]);
    const fig = parametersPerLayerFigure([
      { layer: 'conv', params: 160 },
      { layer: 'pool', params: 0 },
      { layer: 'dense', params: 2_097_664 },
    ]);
    expect(fig.data[0]).toMatchObject({ type: 'bar', x: ['conv', 'dense'], y: [160, 2_097_664] });
    expect(fig.layout.yaxis).toMatchObject({ type: 'log' });
    const mistake = { file: '/d/test/NORMAL/IM-1.jpeg', patient: 'IM-1', label: 'NORMAL', predicted: 'PNEUMONIA', probability: 0.912345 };
    expect(mistakeTable([mistake as PredictionRow])).toEqual([
      { file: 'IM-1.jpeg', patient: 'IM-1', actual: 'NORMAL', predicted: 'PNEUMONIA', 'P(pneumonia)': 0.9123 },
    ]);
  });
});
