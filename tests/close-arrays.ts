/** Comparing arrays of gradients and outputs between backends and implementations. */
import { expect } from 'vitest';

/**
 * Largest difference relative to the largest value of all the arrays together: a gradient that is rounding noise
 * (a conv bias before batch-norm) would otherwise be compared with noise at its own scale.
 */
export function expectCloseToScale(actual: Float32Array[], expected: Float32Array[], tol: number): void {
  expect(actual.length).toBe(expected.length);
  const scale = Math.max(1e-6, ...expected.flatMap((e) => Array.from(e, Math.abs)));
  actual.forEach((a, i) => {
    const worst = Math.max(...Array.from(a, (v, j) => Math.abs(v - expected[i][j])));
    expect(worst / scale, `array ${i}`).toBeLessThanOrEqual(tol);
  });
}
