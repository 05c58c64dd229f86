import { describe, expect, it } from 'vitest';
import { averagePrecision, chooseThreshold, classificationMetrics, confusionAt, prCurve, rocAuc, rocCurve } from '../src/evaluate/metrics';
import { makeRng } from '../src/random';

/** P(score_pos > score_neg) + 0.5 P(tie), over all positive/negative pairs: the definition AUC must equal. */
function bruteForceAuc(labels: number[], probs: number[]): number {
  let sum = 0;
  let pairs = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < labels.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (probs[i] > probs[j]) sum += 1;
      else if (probs[i] === probs[j]) sum += 0.5;
    }
  }
  return sum / pairs;
}

/** sklearn's documentation example (labels [0,0,1,1], scores [0.1,0.4,0.35,0.8]). */
const DOC_LABELS = [0, 0, 1, 1];
const DOC_SCORES = [0.1, 0.4, 0.35, 0.8];

describe('confusionAt', () => {
  it('counts a hand-worked case, predicting positive at prob >= threshold', () => {
    const labels = [1, 1, 1, 0, 0, 0, 1, 0];
    const probs = [0.9, 0.5, 0.2, 0.5, 0.1, 0.7, 0.49, 0.0];
    // threshold 0.5: predicted positive = idx 0,1,3,5 -> tp idx0,1 ; fp idx3,5 ; fn idx2,6 ; tn idx4,7
    expect(confusionAt(labels, probs, 0.5)).toEqual({ tp: 2, fp: 2, tn: 2, fn: 2 });
    expect(confusionAt(labels, probs, 0)).toEqual({ tp: 4, fp: 4, tn: 0, fn: 0 });
    expect(confusionAt(labels, probs, 0.95)).toEqual({ tp: 0, fp: 0, tn: 4, fn: 4 });
  });

  it('accepts typed arrays and rejects bad input with a clear message', () => {
    expect(confusionAt(new Uint8Array([1, 0]), new Float32Array([0.8, 0.3]), 0.5)).toEqual({ tp: 1, fp: 0, tn: 1, fn: 0 });
    expect(() => confusionAt([1, 0], [0.5], 0.5)).toThrow(/2 labels but 1 probabilities/);
    expect(() => confusionAt([1, 2], [0.5, 0.5], 0.5)).toThrow(/index 1 is 2/);
    expect(() => confusionAt([1, 0], [0.5, NaN], 0.5)).toThrow(/index 1 is NaN/);
  });
});

describe('classificationMetrics', () => {
  it('matches hand-computed values', () => {
    // tp 30, fp 10, tn 50, fn 10
    const m = classificationMetrics({ tp: 30, fp: 10, tn: 50, fn: 10 });
    expect(m.accuracy).toBeCloseTo(0.8, 12);
    expect(m.precision).toBeCloseTo(0.75, 12);
    expect(m.recall).toBeCloseTo(0.75, 12);
    expect(m.specificity).toBeCloseTo(50 / 60, 12);
    expect(m.f1).toBeCloseTo(0.75, 12);
    const n = classificationMetrics({ tp: 8, fp: 2, tn: 5, fn: 8 });
    expect(n.precision).toBeCloseTo(0.8, 12);
    expect(n.recall).toBeCloseTo(0.5, 12);
    expect(n.f1).toBeCloseTo((2 * 0.8 * 0.5) / 1.3, 12);
  });

  it('defines every 0/0 as 0', () => {
    expect(classificationMetrics({ tp: 0, fp: 0, tn: 5, fn: 3 })).toEqual({
      accuracy: 5 / 8,
      precision: 0,
      recall: 0,
      specificity: 1,
      f1: 0,
    });
    expect(classificationMetrics({ tp: 4, fp: 0, tn: 0, fn: 0 }).specificity).toBe(0);
    expect(classificationMetrics({ tp: 0, fp: 0, tn: 0, fn: 0 }).accuracy).toBe(0);
  });
});

describe('rocCurve / rocAuc', () => {
  it("reproduces sklearn's documented roc_curve example", () => {
    const roc = rocCurve(DOC_LABELS, DOC_SCORES);
    expect(roc.fpr).toEqual([0, 0, 0.5, 0.5, 1]);
    expect(roc.tpr).toEqual([0, 0.5, 0.5, 1, 1]);
    expect(roc.thresholds).toEqual([Infinity, 0.8, 0.4, 0.35, 0.1]);
    expect(rocAuc(DOC_LABELS, DOC_SCORES)).toBeCloseTo(0.75, 12);
  });

  it('groups tied scores into one point', () => {
    const labels = [1, 0, 1, 0, 1];
    const probs = [0.9, 0.9, 0.5, 0.5, 0.1];
    // groups: >=0.9 tp1 fp1 ; >=0.5 tp2 fp2 ; >=0.1 tp3 fp2
    const roc = rocCurve(labels, probs, { dropIntermediate: false });
    expect(roc.thresholds).toEqual([Infinity, 0.9, 0.5, 0.1]);
    expect(roc.fpr).toEqual([0, 0.5, 1, 1]);
    expect(roc.tpr).toEqual([0, 1 / 3, 2 / 3, 1]);
    // trapezoids: 0.5 * (0 + 1/3)/2 + 0.5 * (1/3 + 2/3)/2 = 1/12 + 1/4 = 1/3
    expect(rocAuc(labels, probs)).toBeCloseTo(1 / 3, 12);
    expect(bruteForceAuc(labels, probs)).toBeCloseTo(1 / 3, 12);
  });

  it('drops only collinear points, like sklearn drop_intermediate', () => {
    // Sorted: 0.9(1) 0.8(1) 0.7(1) 0.6(0) 0.5(0): the middle positives lie on the fpr = 0 segment.
    const labels = [1, 1, 1, 0, 0];
    const probs = [0.9, 0.8, 0.7, 0.6, 0.5];
    const full = rocCurve(labels, probs, { dropIntermediate: false });
    expect(full.thresholds).toEqual([Infinity, 0.9, 0.8, 0.7, 0.6, 0.5]);
    const dropped = rocCurve(labels, probs);
    expect(dropped.thresholds).toEqual([Infinity, 0.9, 0.7, 0.5]);
    expect(dropped.fpr).toEqual([0, 0, 0, 1]);
    expect(dropped.tpr).toEqual([0, 1 / 3, 1, 1]);
  });

  it('handles all-equal scores, perfect and inverted classifiers', () => {
    const labels = [0, 1, 0, 1, 1];
    const same = [0.3, 0.3, 0.3, 0.3, 0.3];
    expect(rocCurve(labels, same)).toEqual({ fpr: [0, 1], tpr: [0, 1], thresholds: [Infinity, 0.3] });
    expect(rocAuc(labels, same)).toBe(0.5);
    const perfect = [0.1, 0.9, 0.2, 0.8, 0.7];
    expect(rocAuc(labels, perfect)).toBe(1);
    expect(
      rocAuc(
        labels,
        perfect.map((p) => 1 - p),
      ),
    ).toBe(0);
  });

  it('returns NaN AUC and NaN rates when only one class is present', () => {
    expect(rocAuc([1, 1, 1], [0.2, 0.5, 0.9])).toBeNaN();
    expect(rocAuc([0, 0], [0.2, 0.5])).toBeNaN();
    const roc = rocCurve([1, 1], [0.2, 0.5]);
    expect(roc.fpr.every(Number.isNaN)).toBe(true);
    expect(roc.tpr).toEqual([0, 0.5, 1]);
    expect(() => rocAuc([], [])).toThrow(/no samples/);
  });

  it('equals the brute-force pairwise AUC on random data with ties', () => {
    const rng = makeRng(7);
    for (let trial = 0; trial < 20; trial++) {
      const n = 30 + trial * 7;
      const labels = Array.from({ length: n }, () => (rng() < 0.4 ? 1 : 0));
      labels[0] = 0;
      labels[1] = 1;
      // Rounded scores force many ties; positives shifted up so AUC is away from 0.5.
      const probs = labels.map((y) => Math.round(Math.min(1, rng() * 0.8 + y * 0.2) * 20) / 20);
      expect(rocAuc(labels, probs)).toBeCloseTo(bruteForceAuc(labels, probs), 12);
    }
  });
});

describe('prCurve / averagePrecision', () => {
  it("reproduces sklearn's documented precision_recall_curve and average_precision_score", () => {
    const pr = prCurve(DOC_LABELS, DOC_SCORES);
    expect(pr.thresholds).toEqual([0.1, 0.35, 0.4, 0.8]);
    expect(pr.recall).toEqual([1, 1, 0.5, 0.5, 0]);
    expect(pr.precision.map((p) => Number(p.toFixed(8)))).toEqual([0.5, 0.66666667, 0.5, 1, 1]);
    // Step-wise: R goes 0 -> 0.5 at P = 1, 0.5 -> 1 at P = 2/3  =>  0.5 + 1/3
    expect(averagePrecision(DOC_LABELS, DOC_SCORES)).toBeCloseTo(0.5 + 1 / 3, 12);
  });

  it('computes AP on a hand-worked case with ties', () => {
    const labels = [1, 0, 1, 1, 0, 0];
    const probs = [0.9, 0.9, 0.6, 0.4, 0.4, 0.1];
    // >=0.9: tp1 fp1 P=1/2 R=1/3 ; >=0.6: tp2 fp1 P=2/3 R=2/3 ; >=0.4: tp3 fp2 P=3/5 R=1 ; >=0.1: P=1/2 R=1
    const expected = (1 / 3) * (1 / 2) + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5);
    expect(averagePrecision(labels, probs)).toBeCloseTo(expected, 12);
    const pr = prCurve(labels, probs);
    expect(pr.thresholds).toEqual([0.1, 0.4, 0.6, 0.9]);
    expect(pr.precision).toEqual([0.5, 3 / 5, 2 / 3, 0.5, 1]);
    expect(pr.recall).toEqual([1, 1, 2 / 3, 1 / 3, 0]);
  });

  it('handles all-equal scores, perfect classifiers and missing positives', () => {
    expect(averagePrecision([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])).toBe(0.5);
    expect(averagePrecision([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])).toBe(1);
    // Inverted: positives ranked last -> R jumps 0.5 at P = 1/3 and 0.5 at P = 1/2.
    expect(averagePrecision([0, 1, 0, 1], [0.9, 0.1, 0.8, 0.2])).toBeCloseTo(0.5 / 3 + 0.25, 12);
    expect(averagePrecision([0, 0], [0.1, 0.9])).toBeNaN();
    expect(prCurve([0, 0], [0.1, 0.9]).recall).toEqual([1, 1, 0]);
  });
});

describe('chooseThreshold', () => {
  it('youden maximises TPR - FPR', () => {
    const labels = [0, 0, 0, 1, 0, 1, 1, 1];
    const probs = [0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8];
    // J at >=0.6: 3/4 - 0 = 0.75 ; at >=0.35: 1 - 1/4 = 0.75 ; tie -> the higher threshold 0.6
    expect(chooseThreshold(labels, probs, { kind: 'youden' })).toBe(0.6);
    const labels2 = [0, 0, 1, 0, 1, 1];
    const probs2 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9];
    // >=0.5: 2/3 - 0 = .667 ; >=0.3: 1 - 1/3 = .667 ; >=0.9: 1/3 ; tie -> 0.5
    expect(chooseThreshold(labels2, probs2, { kind: 'youden' })).toBe(0.5);
    const labels3 = [0, 1, 0, 1, 1];
    const probs3 = [0.2, 0.3, 0.4, 0.8, 0.9];
    // >=0.8: 2/3 ; >=0.3: 1 - 1/2 = 0.5 -> 0.8
    expect(chooseThreshold(labels3, probs3, { kind: 'youden' })).toBe(0.8);
  });

  it('youden on an inverted classifier falls back to the lowest score (J = 0), never +Infinity', () => {
    expect(chooseThreshold([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], { kind: 'youden' })).toBe(0.1);
  });

  it('recall picks the highest threshold that reaches the target', () => {
    const labels = [1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1];
    const probs = [0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3, 0.2];
    // 7 positives. recall >= 5/7 first at 0.7 ; >= 6/7 at 0.4 ; 1 at 0.2
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 5 / 7 })).toBe(0.7);
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 0.8 })).toBe(0.4);
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 6 / 7 })).toBe(0.4);
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 0.95 })).toBe(0.2);
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 0.1 })).toBe(0.95);
    // The confusion at the chosen threshold really meets the target.
    const t = chooseThreshold(labels, probs, { kind: 'recall', target: 0.8 });
    expect(classificationMetrics(confusionAt(labels, probs, t)).recall).toBeGreaterThanOrEqual(0.8);
  });

  it('recall treats a target met exactly as met despite float rounding', () => {
    const labels = Array.from({ length: 10 }, () => 1).concat([0]);
    const probs = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.1, 0.5];
    expect(0.1 * 3).toBeGreaterThan(3 / 10); // the float trap this guards against
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 0.1 * 3 })).toBe(0.97);
    expect(chooseThreshold(labels, probs, { kind: 'recall', target: 0.9 })).toBe(0.91);
  });

  it('fixed returns its value, and bad rules or one-class data fail clearly', () => {
    expect(chooseThreshold([0, 1], [0.2, 0.7], { kind: 'fixed', value: 0.3 })).toBe(0.3);
    expect(chooseThreshold([1, 1], [0.2, 0.7], { kind: 'fixed', value: 0.3 })).toBe(0.3);
    expect(() => chooseThreshold([0, 1], [0.2, 0.7], { kind: 'fixed', value: 1.5 })).toThrow(/outside \[0, 1\]/);
    expect(() => chooseThreshold([0, 1], [0.2, 0.7], { kind: 'recall', target: -1 })).toThrow(/outside/);
    expect(() => chooseThreshold([1, 1], [0.2, 0.7], { kind: 'youden' })).toThrow(/2 positives and 0 negatives/);
  });
});
