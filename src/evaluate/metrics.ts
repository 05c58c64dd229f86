/**
 * Binary classification metrics for the positive class (PNEUMONIA = 1).
 *
 * Pure functions on plain arrays (no tfjs) so they are cheap to test against hand-computed cases.
 * Curve functions follow scikit-learn's definitions so numbers can be compared with the literature:
 * - `rocCurve`       ~ sklearn.metrics.roc_curve (drop_intermediate=True by default, first threshold +Infinity)
 * - `rocAuc`         ~ sklearn.metrics.roc_auc_score (trapezoidal, ties count one half)
 * - `prCurve`        ~ sklearn.metrics.precision_recall_curve (>= 1.3, drop_intermediate=False)
 * - `averagePrecision` ~ sklearn.metrics.average_precision_score (step-wise, no interpolation)
 *
 * Undefined cases:
 * - Ratios whose denominator is zero in `classificationMetrics` are 0 (sklearn's zero_division=0).
 * - AUC and average precision are NaN when a class is missing (sklearn raises / warns); NaN is a number
 *   that propagates visibly into reports instead of aborting a whole evaluation run.
 * - `chooseThreshold` throws when a data-driven rule cannot be applied (one class only): silently
 *   picking a threshold there would be dishonest.
 */

export interface Confusion {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

export interface ClassificationMetrics {
  /** (tp + tn) / all; 0 for an empty confusion matrix. */
  accuracy: number;
  /** tp / (tp + fp); 0 when nothing is predicted positive. */
  precision: number;
  /** Sensitivity, tp / (tp + fn); 0 when there are no positives. */
  recall: number;
  /** tn / (tn + fp); 0 when there are no negatives. */
  specificity: number;
  /** Harmonic mean of precision and recall; 0 when both are 0. */
  f1: number;
}

/** ROC points ordered by decreasing threshold; starts at (0, 0) with threshold +Infinity. */
export interface RocCurve {
  fpr: number[];
  tpr: number[];
  thresholds: number[];
}

/**
 * Precision/recall points ordered by increasing threshold, as sklearn returns them:
 * `precision` and `recall` have one more entry than `thresholds`, the final point being (recall 0, precision 1).
 */
export interface PrCurve {
  precision: number[];
  recall: number[];
  thresholds: number[];
}

/**
 * How to turn probabilities into decisions:
 * - youden: maximise TPR - FPR (Youden's J) on the given data;
 * - recall: the highest threshold that still reaches `target` recall (the most specific such threshold);
 * - fixed: use `value` as is.
 */
export type ThresholdRule = { kind: 'youden' } | { kind: 'recall'; target: number } | { kind: 'fixed'; value: number };

function ratio(numerator: number, denominator: number): number {
  return denominator === 0 ? 0 : numerator / denominator;
}

/** Rejects mismatched lengths, labels other than 0/1 and non-finite scores, naming the first bad index. */
function validateInputs(labels: ArrayLike<number>, probs: ArrayLike<number>): void {
  if (labels.length !== probs.length) {
    throw new Error(`metrics: ${labels.length} labels but ${probs.length} probabilities; they must pair up one to one`);
  }
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 0 && labels[i] !== 1) {
      throw new Error(`metrics: label at index ${i} is ${labels[i]}; labels must be 0 (NORMAL) or 1 (PNEUMONIA)`);
    }
    if (!Number.isFinite(probs[i])) {
      throw new Error(`metrics: probability at index ${i} is ${probs[i]}; the model produced a non-finite score`);
    }
  }
}

export function confusionAt(labels: ArrayLike<number>, probs: ArrayLike<number>, threshold: number): Confusion {
  validateInputs(labels, probs);
  if (Number.isNaN(threshold)) throw new Error('metrics: threshold is NaN');
  const c: Confusion = { tp: 0, fp: 0, tn: 0, fn: 0 };
  for (let i = 0; i < labels.length; i++) {
    const predictedPositive = probs[i] >= threshold;
    if (labels[i] === 1) {
      if (predictedPositive) c.tp++;
      else c.fn++;
    } else if (predictedPositive) c.fp++;
    else c.tn++;
  }
  return c;
}

export function classificationMetrics(c: Confusion): ClassificationMetrics {
  const precision = ratio(c.tp, c.tp + c.fp);
  const recall = ratio(c.tp, c.tp + c.fn);
  return {
    accuracy: ratio(c.tp + c.tn, c.tp + c.fp + c.tn + c.fn),
    precision,
    recall,
    specificity: ratio(c.tn, c.tn + c.fp),
    f1: ratio(2 * precision * recall, precision + recall),
  };
}

/**
 * Cumulative counts at every distinct score, highest score first (sklearn's `_binary_clf_curve`):
 * entry i counts the samples with score >= thresholds[i]. Equal scores form one group, so ties never
 * produce a point that no threshold could realise.
 */
interface CumulativeCounts {
  tps: number[];
  fps: number[];
  thresholds: number[];
  positives: number;
  negatives: number;
}

function cumulativeCounts(labels: ArrayLike<number>, probs: ArrayLike<number>): CumulativeCounts {
  validateInputs(labels, probs);
  if (labels.length === 0) throw new Error('metrics: no samples; curves need at least one labelled prediction');
  const order = Array.from({ length: labels.length }, (_, i) => i).sort((a, b) => probs[b] - probs[a]);
  const tps: number[] = [];
  const fps: number[] = [];
  const thresholds: number[] = [];
  let tp = 0;
  let fp = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    if (labels[i] === 1) tp++;
    else fp++;
    const lastOfGroup = k === order.length - 1 || probs[order[k + 1]] !== probs[i];
    if (lastOfGroup) {
      tps.push(tp);
      fps.push(fp);
      thresholds.push(probs[i]);
    }
  }
  return { tps, fps, thresholds, positives: tp, negatives: fp };
}

/**
 * ROC curve like sklearn's `roc_curve`. With `dropIntermediate` (default, as in sklearn) collinear points
 * are removed; that changes neither the AUC nor the shape of the plot. Rates are NaN when their class is absent.
 */
export function rocCurve(labels: ArrayLike<number>, probs: ArrayLike<number>, opts: { dropIntermediate?: boolean } = {}): RocCurve {
  const { tps, fps, thresholds, positives, negatives } = cumulativeCounts(labels, probs);
  let keep = tps.map((_, i) => i);
  if ((opts.dropIntermediate ?? true) && tps.length > 2) {
    // A point is kept when the curve bends there (non-zero second difference in either coordinate).
    keep = keep.filter(
      (i) => i === 0 || i === tps.length - 1 || fps[i - 1] - 2 * fps[i] + fps[i + 1] !== 0 || tps[i - 1] - 2 * tps[i] + tps[i + 1] !== 0,
    );
  }
  // sklearn divides the prepended 0 as well, so a missing class makes the whole rate NaN.
  const rate = (count: number, total: number) => (total === 0 ? NaN : count / total);
  return {
    fpr: [0, ...keep.map((i) => fps[i])].map((count) => rate(count, negatives)),
    tpr: [0, ...keep.map((i) => tps[i])].map((count) => rate(count, positives)),
    thresholds: [Infinity, ...keep.map((i) => thresholds[i])],
  };
}

/** Area under the ROC curve (trapezoidal, so tied scores count one half). NaN when only one class is present. */
export function rocAuc(labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  const { tps, fps, positives, negatives } = cumulativeCounts(labels, probs);
  if (positives === 0 || negatives === 0) return NaN;
  let area = 0;
  let prevTp = 0;
  let prevFp = 0;
  for (let i = 0; i < tps.length; i++) {
    area += ((fps[i] - prevFp) * (tps[i] + prevTp)) / 2;
    prevTp = tps[i];
    prevFp = fps[i];
  }
  return area / (positives * negatives);
}

/**
 * Precision-recall curve like sklearn's `precision_recall_curve` (>= 1.3): one point per distinct score in
 * increasing threshold order, then the final (recall 0, precision 1) point. With no positives recall is 1
 * everywhere (as in sklearn).
 */
export function prCurve(labels: ArrayLike<number>, probs: ArrayLike<number>): PrCurve {
  const { tps, fps, thresholds, positives } = cumulativeCounts(labels, probs);
  const precision = tps.map((tp, i) => ratio(tp, tp + fps[i]));
  const recall = tps.map((tp) => (positives === 0 ? 1 : tp / positives));
  return {
    precision: [...precision.reverse(), 1],
    recall: [...recall.reverse(), 0],
    thresholds: [...thresholds].reverse(),
  };
}

/**
 * Average precision, sklearn's step-wise definition: sum over thresholds of (R_n - R_{n-1}) * P_n,
 * without interpolation. NaN when there are no positives (recall is undefined; sklearn returns 0 with a warning).
 */
export function averagePrecision(labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  const { tps, fps, positives } = cumulativeCounts(labels, probs);
  if (positives === 0) return NaN;
  let ap = 0;
  let prevRecall = 0;
  for (let i = 0; i < tps.length; i++) {
    const recall = tps[i] / positives;
    ap += (recall - prevRecall) * (tps[i] / (tps[i] + fps[i]));
    prevRecall = recall;
  }
  return ap;
}

/** Float slack for comparing a count ratio with a user-given target such as 0.95. */
const RECALL_EPSILON = 1e-12;

/**
 * Picks the decision threshold (predict positive when prob >= threshold) from labelled data.
 * Candidates are the distinct scores themselves, so the returned threshold reproduces exactly the confusion
 * matrix it was chosen for.
 * - youden: maximises TPR - FPR; ties go to the highest threshold (fewest positive predictions).
 * - recall: the highest threshold whose recall >= target, i.e. the most specific threshold meeting the target.
 * - fixed: returns `value` (must lie in [0, 1]).
 * Data-driven rules need both classes and throw a clear error otherwise.
 */
/**
 * The positives a recall target needs before it means anything: with fewer than 1 / (1 - target) of them, not one
 * may be missed (30 positives and 98% allow none), so the threshold lands on the single worst-scored positive and
 * moves wildly from run to run. 50 for 0.98.
 */
export function positivesNeededFor(target: number): number {
  // recall=1 asks for exactly that (no positive missed), whatever the count.
  return target >= 1 ? 1 : Math.ceil(1 / (1 - target) - RECALL_EPSILON);
}

/**
 * The rule to apply on a validation split: the requested one, or Youden's J with the reason when a recall target
 * cannot be judged on so few positives (a demo set, a quick `--limit` run).
 */
export function applicableRule(labels: ArrayLike<number>, rule: ThresholdRule): { rule: ThresholdRule; note?: string } {
  if (rule.kind !== 'recall') return { rule };
  let positives = 0;
  for (let i = 0; i < labels.length; i++) positives += labels[i] ? 1 : 0;
  const needed = positivesNeededFor(rule.target);
  if (positives >= needed) return { rule };
  return {
    rule: { kind: 'youden' },
    note:
      `recall=${rule.target} needs at least ${needed} validation positives to be judged and there are ${positives}, ` +
      'so the threshold would rest on the single worst-scored one; used youden instead',
  };
}

export function chooseThreshold(labels: ArrayLike<number>, probs: ArrayLike<number>, rule: ThresholdRule): number {
  if (rule.kind === 'fixed') {
    if (!(rule.value >= 0 && rule.value <= 1)) {
      throw new Error(`chooseThreshold: fixed threshold ${rule.value} is outside [0, 1]`);
    }
    return rule.value;
  }
  const { tps, fps, thresholds, positives, negatives } = cumulativeCounts(labels, probs);
  if (positives === 0 || negatives === 0) {
    throw new Error(
      `chooseThreshold: the '${rule.kind}' rule needs both classes but got ${positives} positives and ${negatives} ` +
        'negatives; use a validation split with both classes or a fixed threshold',
    );
  }
  if (rule.kind === 'youden') {
    // Compare J * P * N = tp * N - fp * P in integers, so ties are exact rather than float noise.
    let best = 0;
    let bestScore = -Infinity;
    for (let i = 0; i < tps.length; i++) {
      const score = tps[i] * negatives - fps[i] * positives;
      if (score > bestScore) {
        bestScore = score;
        best = i; // thresholds are decreasing, so the first maximum is the highest threshold
      }
    }
    return thresholds[best];
  }
  if (rule.kind === 'recall') {
    if (!(rule.target >= 0 && rule.target <= 1)) {
      throw new Error(`chooseThreshold: recall target ${rule.target} is outside [0, 1]`);
    }
    // Recall only grows as the threshold falls, so the first threshold reaching the target is the highest.
    const i = tps.findIndex((tp) => tp / positives >= rule.target - RECALL_EPSILON);
    return thresholds[i];
  }
  const unknown: never = rule;
  throw new Error(`chooseThreshold: unknown rule ${JSON.stringify(unknown)}`);
}
