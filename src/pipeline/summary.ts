/** summary.md: what ran, on what data, and how its test metrics compare with the seed article. */
import * as path from 'path';
import { formatAuc, formatPercent } from '../format';
import type { Label, Split, SplitName } from '../types';
import { LABELS } from '../types';
import { type EvalResult, type SplitMetrics, THRESHOLD_SPLIT_NAMES } from '../evaluate';
import { formatAugment } from '../augment';
import { type EpochLogs } from '../train/train';
import { formatThresholdRule } from '../runs/naming';
import { type AveragingOutcome, swaStartEpoch } from '../train/swa';
import type { PipelineConfig } from './config';

/** The seed article's test metrics (percent), for the summary table; specificity was not reported. */
export const SEED_ARTICLE_METRICS = { accuracy: 91.0, precision: 89.8, recall: 96.7, specificity: null, f1: 93.1 } as const;

/** summary.md: what ran, on what, and how the test metrics compare with the seed article. */
/** How weight averaging ended, for the summary's epochs line ('' without averaging). */
function averagingNote(a: AveragingOutcome | undefined): string {
  if (!a) return '';
  const span = `epochs ${a.epochs.join(', ')}`;
  const scores = `${a.judgedOn} ${a.loss.toFixed(4)}` + (a.bestLoss === null ? '' : ` against the best epoch's ${a.bestLoss.toFixed(4)}`);
  return a.kept
    ? `; the evaluated model is the mean of the weights of ${span} (${scores})`
    : `; the mean of the weights of ${span} scored worse (${scores}), so the best epoch is the evaluated model`;
}

export function summaryMarkdown(args: {
  runDir: string;
  config: PipelineConfig;
  backend: string;
  history: readonly EpochLogs[];
  bestEpoch: number | null;
  averaging?: AveragingOutcome;
  stopReason?: string;
  interrupted: boolean;
  evaluation?: EvalResult;
  counts?: Record<SplitName, Record<Label, number>>;
  testSource?: Split['testSource'];
}): string {
  const { config, evaluation: ev } = args;
  const lines = [
    `# Run ${path.basename(args.runDir)}`,
    '',
    `- Data: \`${config.data}\`${config.limit ? ` (limited to ${config.limit} images per folder and class)` : ''}`,
  ];
  if (args.counts) {
    for (const name of ['train', 'val', 'test'] as SplitName[]) {
      lines.push(`  - ${name}: ${LABELS.map((l) => `${args.counts![name][l]} ${l}`).join(', ')}`);
    }
  }
  if (args.testSource)
    lines.push(
      `- Test set: ${args.testSource === 'official' ? "the dataset's own test/ folder" : 'carved from train, grouped by patient'}`,
    );
  const t = config.train;
  const averagedFrom = swaStartEpoch(t);
  lines.push(
    `- Backend: ${args.backend.replace(/^backend:\s*/, '')}`,
    `- Model: ${config.variant} at ${config.imageSize}x${config.imageSize}; Adam lr ${t.learningRate}, batch ${t.batchSize}, ` +
      `class weights ${t.classWeights}, augment ${formatAugment(t.augment) || 'none'}, seed ${t.seed}` +
      (config.normalize && config.normalize !== 'none' ? `, normalize ${config.normalize}` : '') +
      (t.labelSmoothing ? `, label smoothing ${t.labelSmoothing}` : '') +
      (t.mixup ? `, mixup ${t.mixup}` : '') +
      (averagedFrom ? `, weight averaging from epoch ${averagedFrom}` : '') +
      (config.tta && config.tta > 1 ? `, test-time augmentation ${config.tta} views` : ''),
    `- Epochs run: ${args.history.length} of ${t.epochs}${args.stopReason ? ` (${args.stopReason})` : ''}; ` +
      `best epoch (lowest ${config.monitor ?? 'val_loss'}): ${args.bestEpoch ?? '-'}` +
      averagingNote(args.averaging),
  );
  if (args.interrupted || !ev) {
    lines.push(
      '',
      `Training was interrupted; no evaluation was done. Continue with:`,
      '',
      '```',
      `npm start -- --resume ${args.runDir}`,
      '```',
    );
    return lines.join('\n') + '\n';
  }
  const row = (name: string, m: SplitMetrics) =>
    `| ${name} | ${formatPercent(m.accuracy)} | ${formatPercent(m.precision)} | ${formatPercent(m.recall)} | ${formatPercent(m.specificity)} | ${formatPercent(m.f1)} | ${formatAuc(m.auc)} |`;
  const a = SEED_ARTICLE_METRICS;
  lines.push(
    `- Threshold: ${ev.threshold.toFixed(4)} (rule ${formatThresholdRule(ev.thresholdRule)}, chosen on the ${THRESHOLD_SPLIT_NAMES[ev.thresholdOn ?? 'val']} only)`,
    ...(ev.thresholdNote ? [`  - Note: ${ev.thresholdNote}.`] : []),
    '',
    '| | Accuracy % | Precision % | Recall % | Specificity % | F1 % | AUC |',
    '|---|---|---|---|---|---|---|',
    row('This run, test', ev.test),
    row('This run, validation', ev.val),
    ...(ev.valTime ? [row('This run, out-of-time validation', ev.valTime)] : []),
    `| Seed article, test | ${a.accuracy.toFixed(1)} | ${a.precision.toFixed(1)} | ${a.recall.toFixed(1)} | - | ${a.f1.toFixed(1)} | - |`,
    '',
    `Test confusion: TP ${ev.test.confusion.tp}, FP ${ev.test.confusion.fp}, TN ${ev.test.confusion.tn}, FN ${ev.test.confusion.fn}.`,
  );
  if (config.data.includes('demo')) {
    lines.push('', '_The data is the synthetic demo set, not medical images: these numbers say nothing about pneumonia._');
  }
  return lines.join('\n') + '\n';
}
