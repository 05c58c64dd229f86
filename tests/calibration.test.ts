/** Temperature scaling and calibration scores against hand-computed cases. */
import { describe, expect, it } from 'vitest';
import {
  brierScore,
  calibrationScores,
  expectedCalibrationError,
  fitTemperature,
  logit,
  logLoss,
  scaleProbabilities,
} from '../src/evaluate/calibration';
import { confusionAt } from '../src/evaluate/metrics';
import { makeRng } from '../src/random';

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

describe('calibration', () => {
  it('scales logits by 1/T: T = 1 is the identity, T = 2 halves the logit', () => {
    const p = [sigmoid(2), sigmoid(-1), 0.5];
    expect(Array.from(scaleProbabilities(p, 1))).toEqual(Array.from(Float32Array.from(p)));
    const half = scaleProbabilities(p, 2);
    expect(half[0]).toBeCloseTo(sigmoid(1), 6);
    expect(half[1]).toBeCloseTo(sigmoid(-0.5), 6);
    expect(half[2]).toBeCloseTo(0.5, 6);
    expect(logit(sigmoid(1.5))).toBeCloseTo(1.5, 6);
    expect(() => scaleProbabilities(p, 0)).toThrow(/temperature must be a positive number/);
  });

  it('log loss, Brier and ECE by hand', () => {
    const labels = [1, 0, 1, 0];
    const probs = [0.8, 0.4, 0.6, 0.1];
    expect(logLoss(labels, probs)).toBeCloseTo(-(Math.log(0.8) + Math.log(0.6) + Math.log(0.6) + Math.log(0.9)) / 4, 10);
    expect(brierScore(labels, probs)).toBeCloseTo((0.04 + 0.16 + 0.16 + 0.01) / 4, 10);
    // Bins of width 0.5: [0.4, 0.1] hold no positives at mean confidence 0.25; [0.8, 0.6] two at 0.7.
    expect(expectedCalibrationError(labels, probs, 2)).toBeCloseTo(0.5 * 0.25 + 0.5 * 0.3, 10);
    expect(calibrationScores([], [])).toEqual({ logLoss: NaN, brier: NaN, ece: NaN });
  });

  it('recovers the temperature that made the probabilities over-confident', () => {
    const rng = makeRng(3);
    const n = 20000;
    const labels = new Uint8Array(n);
    const probs = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const z = (rng() - 0.5) * 8;
      labels[i] = rng() < sigmoid(z) ? 1 : 0;
      probs[i] = sigmoid(2 * z); // twice the true logit: a model that is too sure
    }
    const t = fitTemperature(labels, probs);
    expect(t).toBeGreaterThan(1.85);
    expect(t).toBeLessThan(2.15);
    const scaled = scaleProbabilities(probs, t);
    expect(expectedCalibrationError(labels, scaled)).toBeLessThan(expectedCalibrationError(labels, probs));
    // Monotone: the same films sit on each side of the mapped threshold.
    const threshold = 0.3;
    const mapped = scaleProbabilities([threshold], t)[0];
    expect(confusionAt(labels, scaled, mapped)).toEqual(confusionAt(labels, probs, threshold));
  });
});
