/**
 * Plotly figure builders: pure functions from numbers to `{ data, layout }` objects. They know nothing about
 * notebooks or the DOM, so they are unit-tested as data and rendered by `viz/display` (or any Plotly host).
 */
import { LABELS } from '../types';

/** The subset of Plotly's trace options these figures use (typed locally: plotly.js-dist ships no types). */
export interface Trace {
  type: 'bar' | 'scatter' | 'histogram' | 'heatmap';
  name?: string;
  x?: (number | string)[];
  y?: (number | string)[];
  z?: number[][];
  text?: (string | number)[] | string[][];
  mode?: 'lines' | 'markers' | 'lines+markers' | 'text' | 'markers+text';
  marker?: Record<string, unknown>;
  line?: Record<string, unknown>;
  colorscale?: string | [number, string][];
  showscale?: boolean;
  showlegend?: boolean;
  hovertemplate?: string;
  textposition?: string;
  texttemplate?: string;
  nbinsx?: number;
  opacity?: number;
  xaxis?: string;
  yaxis?: string;
  legendgroup?: string;
}

export interface Annotation {
  x: number | string;
  y: number | string;
  text: string;
  showarrow: boolean;
  font?: Record<string, unknown>;
  xref?: string;
  yref?: string;
}

export interface Layout {
  title?: { text: string };
  xaxis?: Record<string, unknown>;
  yaxis?: Record<string, unknown>;
  xaxis2?: Record<string, unknown>;
  yaxis2?: Record<string, unknown>;
  grid?: Record<string, unknown>;
  barmode?: 'group' | 'stack' | 'overlay';
  annotations?: Annotation[];
  shapes?: Record<string, unknown>[];
  legend?: Record<string, unknown>;
  height?: number;
  width?: number;
  margin?: Record<string, number>;
}

export interface Figure {
  data: Trace[];
  layout: Layout;
}

const CLASS_COLORS: Record<string, string> = { NORMAL: '#1f77b4', PNEUMONIA: '#d62728' };
const TRAIN_COLOR = '#1f77b4';
const VAL_COLOR = '#ff7f0e';

function title(text: string): { text: string } {
  return { text };
}

/** One row per split: how many images of each class it holds. */
export interface ClassCountRow {
  split: string;
  counts: Record<string, number>;
}

/** Grouped bar chart: x = split, one bar (trace) per class, value labels on the bars. */
export function classCountsFigure(rows: ClassCountRow[], heading = 'Images per split and class'): Figure {
  const classes = [...new Set(rows.flatMap((r) => Object.keys(r.counts)))];
  const data: Trace[] = classes.map((cls) => {
    const y = rows.map((r) => r.counts[cls] ?? 0);
    return {
      type: 'bar',
      name: cls,
      x: rows.map((r) => r.split),
      y,
      text: y.map(String),
      textposition: 'auto',
      marker: { color: CLASS_COLORS[cls] },
    };
  });
  return {
    data,
    layout: { title: title(heading), barmode: 'group', xaxis: { title: { text: 'split' } }, yaxis: { title: { text: 'images' } } },
  };
}

/** A counts table with a column per class (folderClassCounts, splitSizes) as classCountsFigure's rows, named by `key`. */
export function classCountRows<Row extends object>(rows: readonly Row[], key: keyof Row): ClassCountRow[] {
  return rows.map((r) => {
    const cells = r as Record<PropertyKey, unknown>;
    return { split: String(cells[key]), counts: Object.fromEntries(LABELS.map((label) => [label, Number(cells[label])])) };
  });
}

/** Parameters per layer (layers without any left out), on a log axis: where a model's weights are. */
export function parametersPerLayerFigure(rows: ReadonlyArray<{ layer: string; params: number }>, heading = 'Parameters per layer'): Figure {
  const heavy = rows.filter((r) => r.params > 0);
  return {
    data: [{ type: 'bar', name: 'parameters', x: heavy.map((r) => r.layer), y: heavy.map((r) => r.params) }],
    layout: { title: title(heading), yaxis: { title: { text: 'parameters' }, type: 'log' } },
  };
}

/**
 * Pixel intensity distribution, one overlaid histogram per class. Takes pre-binned counts (256 values are
 * too many points to ship per image), so the figure stays small whatever the dataset size.
 */
export function intensityHistogramFigure(
  histograms: { label: string; counts: number[] }[],
  heading = 'Pixel intensity distribution',
): Figure {
  const data: Trace[] = histograms.map((h) => {
    const total = h.counts.reduce((a, b) => a + b, 0) || 1;
    const binWidth = 256 / h.counts.length;
    return {
      type: 'bar',
      name: h.label,
      x: h.counts.map((_, i) => i * binWidth + binWidth / 2),
      y: h.counts.map((c) => c / total),
      opacity: 0.6,
      marker: { color: CLASS_COLORS[h.label] },
    };
  });
  return {
    data,
    layout: {
      title: title(heading),
      barmode: 'overlay',
      xaxis: { title: { text: 'intensity (0-255)' }, range: [0, 256] },
      yaxis: { title: { text: 'fraction of pixels' } },
    },
  };
}

/** Bins 0..255 pixel values into `bins` equal-width counts. */
export function binIntensities(pixels: Uint8Array, bins = 32): number[] {
  const counts = new Array<number>(bins).fill(0);
  const scale = bins / 256;
  for (let i = 0; i < pixels.length; i++) counts[Math.floor(pixels[i] * scale)]++;
  return counts;
}

/** Per-epoch history, as recorded by the training loop (missing val values are allowed). */
export interface EpochHistory {
  epoch: number[];
  loss: number[];
  acc: number[];
  valLoss?: number[];
  valAcc?: number[];
  lr?: number[];
}

/** The columns of a training history, as the figure builders take them. */
export function historySeries(
  rows: ReadonlyArray<{ epoch: number; loss: number; acc: number; val_loss: number; val_acc: number; lr: number }>,
): EpochHistory {
  return {
    epoch: rows.map((h) => h.epoch),
    loss: rows.map((h) => h.loss),
    acc: rows.map((h) => h.acc),
    valLoss: rows.map((h) => h.val_loss),
    valAcc: rows.map((h) => h.val_acc),
    lr: rows.map((h) => h.lr),
  };
}

/** Loss on top, accuracy below, per epoch: the layout of every training-curve figure. */
function lossAccuracyLayout(heading: string, lossTitle: string, height: number): Figure['layout'] {
  return {
    title: title(heading),
    grid: { rows: 2, columns: 1, pattern: 'independent' },
    xaxis: { title: { text: 'epoch' }, dtick: 1 },
    yaxis: { title: { text: lossTitle } },
    xaxis2: { title: { text: 'epoch' }, dtick: 1 },
    yaxis2: { title: { text: 'accuracy' }, range: [0, 1] },
    height,
  };
}

/** Two stacked panels sharing the epoch axis: loss (top) and accuracy (bottom), train vs validation lines. */
export function trainingHistoryFigure(h: EpochHistory, heading = 'Training history'): Figure {
  const line = (name: string, y: number[], color: string, axis: 1 | 2, dash?: string): Trace => ({
    type: 'scatter',
    mode: 'lines+markers',
    name,
    x: h.epoch,
    y,
    line: { color, ...(dash ? { dash } : {}) },
    legendgroup: name.startsWith('train') ? 'train' : 'val',
    ...(axis === 2 ? { xaxis: 'x2', yaxis: 'y2' } : {}),
  });
  const data: Trace[] = [line('train loss', h.loss, TRAIN_COLOR, 1)];
  if (h.valLoss) data.push(line('val loss', h.valLoss, VAL_COLOR, 1));
  data.push(line('train accuracy', h.acc, TRAIN_COLOR, 2, 'dot'));
  if (h.valAcc) data.push(line('val accuracy', h.valAcc, VAL_COLOR, 2, 'dot'));
  return { data, layout: lossAccuracyLayout(heading, 'loss', 560) };
}

/** Up to this many distinct rates get a tick each on the learning-rate chart. */
const MAX_RATE_TICKS = 6;

/** Learning rate per epoch on a log axis (reduce-on-plateau shows as steps). */
export function learningRateFigure(epochs: number[], lr: number[], heading = 'Learning rate'): Figure {
  // A tick at each rate the run used ("1e-3", "3e-4"): Plotly's own log ticks over less than a decade label every
  // minor step (0.001, 9, 8, 7, ...). A schedule with many rates keeps the decades, with 2 and 5 between them.
  const rates = [...new Set(lr.filter((v) => v > 0))].sort((a, b) => a - b);
  const ticks =
    rates.length <= MAX_RATE_TICKS
      ? { tickmode: 'array', tickvals: rates, ticktext: rates.map((v) => Number(v.toPrecision(2)).toExponential()) }
      : { dtick: 'D2' };
  return {
    data: [{ type: 'scatter', mode: 'lines+markers', name: 'learning rate', x: epochs, y: lr, line: { shape: 'hv', color: '#2ca02c' } }],
    layout: {
      title: title(heading),
      xaxis: { title: { text: 'epoch' }, dtick: 1 },
      yaxis: { title: { text: 'learning rate' }, type: 'log', ...ticks },
    },
  };
}

/**
 * Confusion matrix heatmap with the count and row percentage written in each cell.
 * `matrix[actual][predicted]`; rows are drawn top-down in `labels` order, as in textbooks.
 */
export function confusionMatrixFigure(matrix: number[][], labels: readonly string[], heading = 'Confusion matrix'): Figure {
  const max = Math.max(1, ...matrix.flat());
  const annotations: Annotation[] = [];
  matrix.forEach((row, actual) => {
    const rowTotal = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((count, predicted) => {
      annotations.push({
        x: labels[predicted],
        y: labels[actual],
        text: `${count}<br>(${((100 * count) / rowTotal).toFixed(1)}%)`,
        showarrow: false,
        font: { color: count > max / 2 ? 'white' : 'black', size: 16 },
      });
    });
  });
  return {
    data: [
      {
        type: 'heatmap',
        z: matrix,
        x: [...labels],
        y: [...labels],
        // Light for few, dark for many (plotly.js's named 'Blues' runs the other way).
        colorscale: [
          [0, '#f7fbff'],
          [1, '#08306b'],
        ],
        showscale: true,
        hovertemplate: 'actual %{y}<br>predicted %{x}<br>%{z} images<extra></extra>',
      },
    ],
    layout: {
      title: title(heading),
      xaxis: { title: { text: 'predicted' }, side: 'bottom' },
      yaxis: { title: { text: 'actual' }, autorange: 'reversed' },
      annotations,
      width: 520,
      height: 460,
    },
  };
}

/** A curve sampled at decreasing thresholds: `x[i], y[i]` is the operating point at `thresholds[i]`. */
export interface CurvePoints {
  x: number[];
  y: number[];
  thresholds: number[];
}

/** Index of the curve point whose threshold is closest to `threshold`. */
export function nearestThresholdIndex(thresholds: number[], threshold: number): number {
  let best = 0;
  for (let i = 1; i < thresholds.length; i++) {
    if (Math.abs(thresholds[i] - threshold) < Math.abs(thresholds[best] - threshold)) best = i;
  }
  return best;
}

function thresholdMarker(curve: CurvePoints, threshold: number, xName: string, yName: string, textposition: string): Trace {
  const i = nearestThresholdIndex(curve.thresholds, threshold);
  return {
    type: 'scatter',
    mode: 'markers+text',
    name: `threshold ${threshold.toFixed(3)}`,
    x: [curve.x[i]],
    y: [curve.y[i]],
    text: [`t=${threshold.toFixed(2)}`],
    textposition,
    marker: { size: 12, color: '#d62728', symbol: 'x' },
    hovertemplate: `threshold ${threshold.toFixed(3)}<br>${xName} %{x:.3f}<br>${yName} %{y:.3f}<extra></extra>`,
  };
}

/** ROC curve with the AUC in the legend, the chance diagonal, and the chosen threshold marked. */
export function rocFigure(
  roc: { fpr: number[]; tpr: number[]; thresholds: number[] },
  auc: number,
  threshold: number,
  heading = 'ROC curve',
): Figure {
  const curve = { x: roc.fpr, y: roc.tpr, thresholds: roc.thresholds };
  return {
    data: [
      { type: 'scatter', mode: 'lines', name: `ROC (AUC = ${auc.toFixed(3)})`, x: roc.fpr, y: roc.tpr, line: { color: TRAIN_COLOR } },
      { type: 'scatter', mode: 'lines', name: 'chance', x: [0, 1], y: [0, 1], line: { dash: 'dash', color: 'gray' } },
      // ROC operating points sit top-left: label below-right stays inside the plot.
      thresholdMarker(curve, threshold, 'FPR', 'TPR', 'bottom right'),
    ],
    layout: {
      title: title(heading),
      xaxis: { title: { text: 'false positive rate' }, range: [0, 1] },
      yaxis: { title: { text: 'true positive rate (recall)' }, range: [0, 1.02] },
      width: 560,
      height: 480,
    },
  };
}

/** Precision-recall curve (recall on x) with the positive-class base rate and the chosen threshold marked. */
export function precisionRecallFigure(
  pr: { recall: number[]; precision: number[]; thresholds: number[] },
  threshold: number,
  baseRate?: number,
  heading = 'Precision-recall curve',
): Figure {
  const curve = { x: pr.recall, y: pr.precision, thresholds: pr.thresholds };
  const data: Trace[] = [
    { type: 'scatter', mode: 'lines', name: 'precision-recall', x: pr.recall, y: pr.precision, line: { color: TRAIN_COLOR } },
  ];
  if (baseRate !== undefined) {
    data.push({
      type: 'scatter',
      mode: 'lines',
      name: `base rate ${baseRate.toFixed(2)}`,
      x: [0, 1],
      y: [baseRate, baseRate],
      line: { dash: 'dash', color: 'gray' },
    });
  }
  // PR operating points sit towards high recall (right): label below-left stays inside the plot.
  data.push(thresholdMarker(curve, threshold, 'recall', 'precision', 'bottom left'));
  return {
    data,
    layout: {
      title: title(heading),
      xaxis: { title: { text: 'recall' }, range: [0, 1] },
      yaxis: { title: { text: 'precision' }, range: [0, 1.02] },
      width: 560,
      height: 480,
    },
  };
}

/** Named metric values (0..1) for one source, e.g. this run vs the seed notebook's reported numbers. */
export interface MetricSet {
  name: string;
  /** Missing or null metrics (e.g. the seed never reported AUC) are left out of that group. */
  values: Record<string, number | null | undefined>;
}

/** Grouped bars: x = metric, one bar per source, percentages as labels. */
export function metricsComparisonFigure(sets: MetricSet[], heading = 'Test metrics vs the seed article'): Figure {
  const metrics = [...new Set(sets.flatMap((s) => Object.keys(s.values)))];
  const palette = ['#1f77b4', '#7f7f7f', '#ff7f0e', '#2ca02c', '#9467bd'];
  const data: Trace[] = sets.map((s, i) => {
    const present = metrics.filter((m) => typeof s.values[m] === 'number');
    const y = present.map((m) => 100 * (s.values[m] as number));
    return {
      type: 'bar',
      name: s.name,
      x: present,
      y,
      text: y.map((v) => v.toFixed(1)),
      textposition: 'auto',
      marker: { color: palette[i % palette.length] },
    };
  });
  return {
    data,
    layout: {
      title: title(heading),
      barmode: 'group',
      yaxis: { title: { text: '%' }, range: [0, 105] },
      xaxis: { categoryarray: metrics },
    },
  };
}

/**
 * Where the predicted probabilities fall, per true class, with the threshold as a vertical line: shows at a glance
 * whether the classes separate and how many images sit near (or exactly on) the threshold.
 */
export function probabilityHistogramFigure(
  rows: { label: string; probability: number }[],
  threshold: number,
  bins = 40,
  heading = 'Predicted P(PNEUMONIA) by true class',
): Figure {
  const labels = [...new Set(rows.map((r) => r.label))].sort();
  const data: Trace[] = labels.map((label) => {
    const counts = new Array<number>(bins).fill(0);
    for (const r of rows) if (r.label === label) counts[Math.min(bins - 1, Math.floor(r.probability * bins))]++;
    return {
      type: 'bar',
      name: `actual ${label}`,
      x: counts.map((_, i) => (i + 0.5) / bins),
      y: counts,
      opacity: 0.6,
      marker: { color: CLASS_COLORS[label] },
    };
  });
  return {
    data,
    layout: {
      title: title(heading),
      barmode: 'overlay',
      xaxis: { title: { text: 'P(PNEUMONIA)' }, range: [0, 1] },
      yaxis: { title: { text: 'images' } },
      shapes: [{ type: 'line', x0: threshold, x1: threshold, yref: 'paper', y0: 0, y1: 1, line: { color: '#d62728', dash: 'dash' } }],
      annotations: [{ x: threshold, y: 1, xref: 'x', yref: 'paper', text: `threshold ${threshold.toFixed(3)}`, showarrow: false }],
    },
  };
}

/** Plotly's default palette, one colour per run in comparison charts. */
const RUN_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

export interface RunCurves {
  name: string;
  history: EpochHistory;
}

/**
 * Training (solid) and validation (dashed) curves of several runs overlaid: loss on top, accuracy below, one colour
 * per run, so a run that overfits or learns slower stands out.
 */
export function runCurvesFigure(runs: readonly RunCurves[], heading = 'Training and validation curves per run'): Figure {
  const data: Trace[] = [];
  runs.forEach((run, i) => {
    const color = RUN_COLORS[i % RUN_COLORS.length];
    const h = run.history;
    const line = (what: string, y: number[] | undefined, axis: 1 | 2, dash: string): void => {
      if (!y) return;
      data.push({
        type: 'scatter',
        mode: 'lines+markers',
        name: `${run.name} · ${what}`,
        x: h.epoch,
        y,
        line: { color, dash },
        legendgroup: run.name,
        ...(axis === 2 ? { xaxis: 'x2', yaxis: 'y2' } : {}),
      });
    };
    line('train loss', h.loss, 1, 'solid');
    line('val loss', h.valLoss, 1, 'dash');
    line('train acc', h.acc, 2, 'solid');
    line('val acc', h.valAcc, 2, 'dash');
  });
  return { data, layout: lossAccuracyLayout(heading, 'loss (solid train, dashed val)', 620) };
}

export interface RunRoc {
  name: string;
  roc: { fpr: number[]; tpr: number[] };
  auc: number;
}

/** ROC curves of several runs on one chart, with the AUC in each legend entry and the chance diagonal. */
export function rocOverlayFigure(runs: readonly RunRoc[], heading = 'ROC curves (validation)'): Figure {
  const data: Trace[] = runs.map((run, i) => ({
    type: 'scatter',
    mode: 'lines',
    name: `${run.name} (AUC ${Number.isFinite(run.auc) ? run.auc.toFixed(3) : '-'})`,
    x: run.roc.fpr,
    y: run.roc.tpr,
    line: { color: RUN_COLORS[i % RUN_COLORS.length] },
  }));
  data.push({
    type: 'scatter',
    mode: 'lines',
    name: 'chance',
    x: [0, 1],
    y: [0, 1],
    line: { color: '#999', dash: 'dot' },
    showlegend: false,
  });
  return {
    data,
    layout: {
      title: title(heading),
      xaxis: { title: { text: 'false positive rate (1 - specificity)' }, range: [0, 1] },
      yaxis: { title: { text: 'true positive rate (recall)' }, range: [0, 1] },
      height: 520,
    },
  };
}
