/** Adam's update as one fused kernel per variable, used while `native` is the active backend. */
import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon';
import { NATIVE_BACKEND } from './backend';
import { uninitialised } from './buffers';
import { type NativeKernel, output, registerNativeOnly, size, values } from './common';

const NATIVE_ADAM = 'NativeAdam';

function adamKernel(a: NativeAddon): NativeKernel {
  return ({ inputs, backend, attrs }) => {
    const { value, gradient, m, v } = inputs;
    const n = size(value.shape);
    const [w2, m2, v2] = [uninitialised(n), uninitialised(n), uninitialised(n)];
    a.adam(
      values(backend, value),
      values(backend, gradient),
      values(backend, m),
      values(backend, v),
      Float64Array.from(attrs!.params as number[]),
      w2,
      m2,
      v2,
    );
    return [w2, m2, v2].map((d) => output(backend, [...value.shape], d));
  };
}

/** The kernel the fused update runs (native backend only). */
export function registerAdamKernel(a: NativeAddon): void {
  registerNativeOnly(NATIVE_ADAM, adamKernel(a));
}

type NamedGradient = { name: string; tensor: tf.Tensor };

/** AdamOptimizer's private state, as tfjs 4 keeps it. */
interface AdamInternals {
  beta1: number;
  beta2: number;
  epsilon: number;
  learningRate: number;
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  accumulatedFirstMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  accumulatedSecondMoment: Array<{ originalName: string; variable: tf.Variable } | undefined>;
  incrementIterations(): void;
}

/**
 * tfjs's Adam update is 14 tensor ops per variable, each a full pass over it (most of a training
 * step's Multiply/Add/RealDiv calls). While `native` is the active backend and every gradient is
 * float32, applyGradients does the same bookkeeping as tfjs 4.22's but updates each variable with
 * one fused kernel; otherwise tfjs's own method runs.
 */
export function registerFusedAdam(): void {
  const proto = tf.AdamOptimizer.prototype as unknown as { applyGradients(g: tf.NamedTensorMap | NamedGradient[]): void };
  const original = proto.applyGradients;
  proto.applyGradients = function (this: AdamInternals, variableGradients) {
    const named = Array.isArray(variableGradients);
    const grads = named ? variableGradients.map((v) => v.tensor) : Object.values(variableGradients);
    const ok =
      tf.getBackend() === NATIVE_BACKEND &&
      grads.every((g) => g == null || g.dtype === 'float32') &&
      Array.isArray(this.accumulatedFirstMoment) &&
      this.accBeta1 instanceof tf.Variable;
    if (!ok) return original.call(this, variableGradients);
    const varNames = named ? variableGradients.map((v) => v.name) : Object.keys(variableGradients);
    tf.tidy(() => {
      const c1 = 1 - this.accBeta1.dataSync()[0];
      const c2 = 1 - this.accBeta2.dataSync()[0];
      // tfjs makes these float32 scalars: round them the same way.
      const params = [this.beta1, 1 - this.beta1, this.beta2, 1 - this.beta2, c1, c2, this.epsilon, -this.learningRate].map(Math.fround);
      varNames.forEach((name, i) => {
        const value = tf.engine().registeredVariables[name];
        if (this.accumulatedFirstMoment[i] == null) {
          this.accumulatedFirstMoment[i] = { originalName: `${name}/m`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        if (this.accumulatedSecondMoment[i] == null) {
          this.accumulatedSecondMoment[i] = { originalName: `${name}/v`, variable: tf.tidy(() => tf.zerosLike(value).variable(false)) };
        }
        const gradient = named ? (variableGradients as NamedGradient[])[i].tensor : (variableGradients as tf.NamedTensorMap)[name];
        if (gradient == null) return;
        const m = this.accumulatedFirstMoment[i]!.variable;
        const v = this.accumulatedSecondMoment[i]!.variable;
        const [w2, m2, v2] = tf.engine().runKernel(NATIVE_ADAM, { value, gradient, m, v }, { params } as never) as tf.Tensor[];
        m.assign(m2);
        v.assign(v2);
        value.assign(w2);
      });
      this.accBeta1.assign(tf.mul(this.accBeta1, this.beta1));
      this.accBeta2.assign(tf.mul(this.accBeta2, this.beta2));
    });
    this.incrementIterations();
  };
}
