/**
 * The fused Adam update (src/accel/fused/adam.ts) replaces tfjs's AdamOptimizer.prototype.applyGradients and reads
 * and writes the optimizer's private fields. These tests fail when a tfjs upgrade changes what it relies on: the
 * fields' layout after a few steps, and the update itself (the patched method, given a float32 reference kernel on
 * cpu, must match tfjs's own to ~1e-6 over several steps). They need no built addon; tests/native-kernels.test.ts
 * compares the addon's kernel with tfjs on cpu where it is built.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { makeRng } from '../src/random';
import {
  MIRRORED_TFJS,
  adamLayoutProblem,
  fusedAdamInstalled,
  installFusedAdam,
  uninstallFusedAdam,
  type AdamInternals,
} from '../src/accel/fused/adam';

const REFERENCE_KERNEL = 'TestFusedAdamReference';
let referenceCalls = 0;

// The addon's loop (Adam in accel/onednn/src/elementwise.cc) in float32 JavaScript, for the cpu backend.
tf.registerKernel({
  kernelName: REFERENCE_KERNEL,
  backendName: 'cpu',
  kernelFunc: ({ inputs, backend, attrs }) => {
    referenceCalls++;
    const cpu = backend as MathBackendCPU;
    const { value, gradient, m, v } = inputs as Record<string, tf.TensorInfo>;
    const read = (t: tf.TensorInfo) => cpu.data.get(t.dataId).values as Float32Array;
    const [w, g, m0, v0] = [read(value), read(gradient), read(m), read(v)];
    const [b1, omb1, b2, omb2, c1, c2, eps, negLr] = (attrs as { params: number[] }).params;
    const f = Math.fround;
    const [w2, m2, v2] = [new Float32Array(w.length), new Float32Array(w.length), new Float32Array(w.length)];
    for (let i = 0; i < w.length; i++) {
      m2[i] = f(f(m0[i] * b1) + f(g[i] * omb1));
      v2[i] = f(f(v0[i] * b2) + f(f(g[i] * g[i]) * omb2));
      w2[i] = f(f(f(f(m2[i] / c1) / f(f(Math.sqrt(f(v2[i] / c2))) + eps)) * negLr) + w[i]);
    }
    return [w2, m2, v2].map((d) => cpu.makeTensorInfo(value.shape, 'float32', d));
  },
});

const proto = tf.AdamOptimizer.prototype as unknown as { applyGradients: unknown };
const tfjsApplyGradients = proto.applyGradients;
const onTfjs = `tfjs ${tf.version_core}; src/accel/fused/adam.ts mirrors tfjs ${MIRRORED_TFJS}'s AdamOptimizer`;

function internals(optimizer: tf.Optimizer): AdamInternals {
  return optimizer as unknown as AdamInternals;
}

function randomArray(seed: number, n: number): Float32Array {
  const rng = makeRng(seed);
  return Float32Array.from({ length: n }, () => rng() * 2 - 1);
}

/** Everything an Adam step leaves behind, as host arrays: variables, getWeights() (iterations, moments), accBeta. */
interface AdamState {
  variables: Float32Array[];
  weights: Array<{ name: string; values: Float32Array }>;
  accBeta: number[];
  iterations: number;
  tensorsLeft: number;
}

/** Three map-gradient steps (minimize) and one list-gradient step (applyGradients) of two variables on cpu. */
async function train(): Promise<AdamState> {
  await tf.setBackend('cpu');
  const before = tf.memory().numTensors;
  const vars = [
    tf.variable(tf.tensor(randomArray(1, 12), [3, 4]), true, 'adamTestA'),
    tf.variable(tf.tensor(randomArray(2, 5)), true, 'adamTestB'),
  ];
  const goals = [tf.tensor(randomArray(3, 12), [3, 4]), tf.tensor(randomArray(4, 5))];
  const optimizer = tf.train.adam(0.05, 0.9, 0.999, 1e-7);
  const loss = () => tf.addN(vars.map((v, i) => tf.sum(tf.square(tf.sub(v, goals[i]))))) as tf.Scalar;
  for (let step = 0; step < 3; step++) optimizer.minimize(loss, false, vars);
  const grads = tf.tidy(() => vars.map((v, i) => ({ name: v.name, tensor: tf.mul(tf.sub(v, goals[i]), 3) })));
  optimizer.applyGradients(grads);
  const weights = await optimizer.getWeights();
  const state: AdamState = {
    variables: await Promise.all(vars.map(async (v) => (await v.data()) as Float32Array)),
    weights: await Promise.all(weights.map(async (w) => ({ name: w.name, values: (await w.tensor.data()) as Float32Array }))),
    accBeta: [internals(optimizer).accBeta1.dataSync()[0], internals(optimizer).accBeta2.dataSync()[0]],
    iterations: optimizer.iterations,
    tensorsLeft: 0,
  };
  tf.dispose([...vars, ...goals, ...grads.map((g) => g.tensor), weights[0].tensor]);
  optimizer.dispose();
  state.tensorsLeft = tf.memory().numTensors - before;
  return state;
}

function maxRelativeError(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-3, Math.abs(b[i])));
  return worst;
}

afterEach(() => {
  uninstallFusedAdam();
});

describe("tfjs's AdamOptimizer, as the fused update relies on it", () => {
  it('keeps its state in the private fields the fused update reads and writes', async () => {
    await tf.setBackend('cpu');
    expect(fusedAdamInstalled()).toBe(false);
    const a = tf.variable(tf.ones([3, 4]), true, 'layoutA');
    const b = tf.variable(tf.ones([5]), true, 'layoutB');
    const optimizer = tf.train.adam(0.01, 0.9, 0.999, 1e-7);
    // The method lives on the prototype (what the patch replaces), not on instances.
    expect(Object.prototype.hasOwnProperty.call(tf.AdamOptimizer.prototype, 'applyGradients'), onTfjs).toBe(true);
    expect(Object.prototype.hasOwnProperty.call(optimizer, 'applyGradients'), onTfjs).toBe(false);
    expect(adamLayoutProblem(optimizer), onTfjs).toBeUndefined();
    const o = internals(optimizer);
    expect([o.beta1, o.beta2, o.epsilon, o.learningRate], onTfjs).toEqual([0.9, 0.999, 1e-7, 0.01]);
    expect(o.accumulatedFirstMoment, onTfjs).toEqual([]);
    expect(o.accumulatedSecondMoment, onTfjs).toEqual([]);
    expect(o.accBeta1.dataSync()[0]).toBeCloseTo(0.9, 7);

    for (let step = 0; step < 2; step++) optimizer.minimize(() => tf.add(tf.sum(tf.square(a)), tf.sum(b)) as tf.Scalar, false, [a, b]);
    expect(adamLayoutProblem(optimizer), onTfjs).toBeUndefined();
    for (const [moments, suffix] of [
      [o.accumulatedFirstMoment, 'm'],
      [o.accumulatedSecondMoment, 'v'],
    ] as const) {
      expect(moments.length, onTfjs).toBe(2);
      [a, b].forEach((variable, i) => {
        const moment = moments[i]!;
        expect(moment.originalName, onTfjs).toBe(`${variable.name}/${suffix}`);
        expect(moment.variable, onTfjs).toBeInstanceOf(tf.Variable);
        expect(moment.variable.shape, onTfjs).toEqual(variable.shape);
        expect(moment.variable.dtype).toBe('float32');
        expect(moment.variable.trainable, onTfjs).toBe(false);
      });
    }
    // accBeta holds beta^(t+1) after t steps; the patch divides by 1 - beta^t from it.
    expect(o.accBeta1.dataSync()[0], onTfjs).toBeCloseTo(0.9 ** 3, 6);
    expect(o.accBeta2.dataSync()[0], onTfjs).toBeCloseTo(0.999 ** 3, 6);
    expect(optimizer.iterations, onTfjs).toBe(2);
    const weights = await optimizer.getWeights();
    expect(
      weights.map((w) => w.name),
      onTfjs,
    ).toEqual(['iter', 'layoutA/m', 'layoutB/m', 'layoutA/v', 'layoutB/v']);
    tf.dispose([a, b, weights[0].tensor]);
    optimizer.dispose();
  });

  it('says what is missing when an optimizer lacks that layout', () => {
    expect(adamLayoutProblem({})).toBe('beta1 is not a number');
    const optimizer = tf.train.adam(0.01);
    const broken = Object.assign(Object.create(Object.getPrototypeOf(optimizer)), optimizer, { accBeta2: 0.999 });
    expect(adamLayoutProblem(broken)).toBe('accBeta2 is not a float32 scalar variable');
    optimizer.dispose();
  });
});

describe('the fused Adam update', () => {
  it("matches tfjs's own update on cpu over several steps (map and list gradients), state and tensors included", async () => {
    const tfjs = await train();
    installFusedAdam({ kernel: REFERENCE_KERNEL, when: () => tf.getBackend() === 'cpu' });
    referenceCalls = 0;
    const fused = await train();
    expect(referenceCalls).toBe(4 * 2); // every step of both variables went through the fused path
    fused.variables.forEach((v, i) => expect(maxRelativeError(v, tfjs.variables[i]), onTfjs).toBeLessThanOrEqual(1e-6));
    expect(
      fused.weights.map((w) => w.name),
      onTfjs,
    ).toEqual(tfjs.weights.map((w) => w.name));
    fused.weights.forEach((w, i) => expect(maxRelativeError(w.values, tfjs.weights[i].values), w.name).toBeLessThanOrEqual(1e-6));
    fused.accBeta.forEach((b, i) => expect(b).toBeCloseTo(tfjs.accBeta[i], 7));
    expect(fused.iterations).toBe(tfjs.iterations);
    expect(fused.tensorsLeft).toBe(tfjs.tensorsLeft);
    expect(maxRelativeError(fused.variables[0], randomArray(1, 12))).toBeGreaterThan(1e-3); // the variables did move
  });

  it('leaves the update to tfjs while when() is false', async () => {
    const tfjs = await train();
    installFusedAdam({ kernel: REFERENCE_KERNEL, when: () => false });
    referenceCalls = 0;
    const fused = await train();
    expect(referenceCalls).toBe(0);
    fused.variables.forEach((v, i) => expect(Array.from(v)).toEqual(Array.from(tfjs.variables[i])));
  });

  it("is installed and uninstalled explicitly, and uninstalling restores tfjs's method", () => {
    installFusedAdam({ kernel: REFERENCE_KERNEL, when: () => true });
    expect(fusedAdamInstalled()).toBe(true);
    expect(proto.applyGradients).not.toBe(tfjsApplyGradients);
    installFusedAdam({ kernel: REFERENCE_KERNEL, when: () => false }); // replaces, does not stack
    expect(uninstallFusedAdam()).toBe(true);
    expect(proto.applyGradients).toBe(tfjsApplyGradients);
    expect(fusedAdamInstalled()).toBe(false);
    expect(uninstallFusedAdam()).toBe(false);
  });
});
