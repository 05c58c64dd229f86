/**
 * Temperature scaling (Guo et al., 2017) for a binary classifier, and the scores that say whether it helped.
 *
 * p_T = sigmoid(logit(p) / T), one T fitted on validation by minimising the log loss. T > 1 softens over-confident
 * probabilities. It is monotone, so it moves no film across a threshold chosen on the same probabilities and changes
 * no AUC: what it changes is what a probability means (the 0.9 shown by `npm run predict` or the web page).
 */
import { EPS } from '../train/loss';

export interface CalibrationScores {
  /** Mean binary cross-entropy. */
  logLoss: number;
  /** Mean squared difference between probability and label. */
  brier: number;
  /** Expected calibration error over equal-width probability bins: sum over bins of |accuracy - confidence| * share. */
  ece: number;
}

function clamp(p: number): number {
  return Math.min(Math.max(p, EPS), 1 - EPS);
}

export function logit(p: number): number {
  const q = clamp(p);
  return Math.log(q / (1 - q));
}

/** The probabilities after temperature scaling with `temperature` (> 0). */
export function scaleProbabilities(probs: ArrayLike<number>, temperature: number): Float32Array {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`temperature must be a positive number, got ${temperature}`);
  return Float32Array.from(probs, (p) => 1 / (1 + Math.exp(-logit(p) / temperature)));
}

export function logLoss(labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) sum -= labels[i] ? Math.log(clamp(probs[i])) : Math.log(1 - clamp(probs[i]));
  return sum / labels.length;
}

export function brierScore(labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < labels.length; i++) sum += (probs[i] - labels[i]) ** 2;
  return sum / labels.length;
}

/** ECE over `bins` equal-width bins of the probability of PNEUMONIA (the last bin includes 1). */
export function expectedCalibrationError(labels: ArrayLike<number>, probs: ArrayLike<number>, bins = 10): number {
  const count = new Array<number>(bins).fill(0);
  const positives = new Array<number>(bins).fill(0);
  const confidence = new Array<number>(bins).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const b = Math.min(bins - 1, Math.floor(probs[i] * bins));
    count[b]++;
    positives[b] += labels[i] ? 1 : 0;
    confidence[b] += probs[i];
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) {
    if (count[b]) ece += (Math.abs(positives[b] - confidence[b]) / count[b]) * (count[b] / labels.length);
  }
  return ece;
}

export function calibrationScores(labels: ArrayLike<number>, probs: ArrayLike<number>): CalibrationScores {
  if (labels.length === 0) return { logLoss: NaN, brier: NaN, ece: NaN };
  return { logLoss: logLoss(labels, probs), brier: brierScore(labels, probs), ece: expectedCalibrationError(labels, probs) };
}

/** The temperature in [1/50, 50] with the lowest log loss on (labels, probs): golden-section search on log T. */
export function fitTemperature(labels: ArrayLike<number>, probs: ArrayLike<number>): number {
  if (labels.length === 0) throw new Error('fitTemperature: no validation films to fit on');
  const logits = Float64Array.from(probs, logit);
  const loss = (logT: number) => {
    const t = Math.exp(logT);
    let sum = 0;
    for (let i = 0; i < logits.length; i++) {
      const z = logits[i] / t;
      // log(1 + e^-z) for positives, log(1 + e^z) for negatives, computed without overflow.
      const m = labels[i] ? -z : z;
      sum += m > 0 ? m + Math.log1p(Math.exp(-m)) : Math.log1p(Math.exp(m));
    }
    return sum;
  };
  const golden = (Math.sqrt(5) - 1) / 2;
  let [lo, hi] = [Math.log(1 / 50), Math.log(50)];
  let a = hi - golden * (hi - lo);
  let b = lo + golden * (hi - lo);
  let [fa, fb] = [loss(a), loss(b)];
  for (let i = 0; i < 80; i++) {
    if (fa <= fb) {
      [hi, b, fb] = [b, a, fa];
      a = hi - golden * (hi - lo);
      fa = loss(a);
    } else {
      [lo, a, fa] = [a, b, fb];
      b = lo + golden * (hi - lo);
      fb = loss(b);
    }
  }
  return Math.exp((lo + hi) / 2);
}
