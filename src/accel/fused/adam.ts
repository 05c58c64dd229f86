/**
 * Adam's update as one fused kernel per variable, on every backend that registers FUSED_ADAM (`native`:
 * onednn/adam.ts; `wasm`: wasm/fused.ts).
 *
 * tfjs's Adam update is 14 tensor ops per variable, each a full pass over it (most of a training step's
 * Multiply/Add/RealDiv calls). tfjs has no hook for an optimizer's update, so this replaces
 * `tf.AdamOptimizer.prototype.applyGradients`, which is process-wide (the class is global). The replacement:
 * - is put in place by installFusedAdam() and taken out by uninstallFusedAdam(), which restores tfjs's method;
 * - runs only when its `when()` says so (installBackendFusedAdam: the active backend registered FUSED_ADAM), every gradient is
 *   float32 and the optimizer has the private layout below (adamLayoutProblem); otherwise tfjs's own method runs;
 * - does the same bookkeeping as tfjs 4.22's method (moment variables created on first use under tfjs's names,
 *   accBeta1/accBeta2, the iteration count), so getWeights/setWeights, checkpoints and resuming see no difference,
 *   and updates each variable with one call of the kernel it was given.
 * It reads and writes AdamOptimizer's private fields (AdamInternals). tests/accel-adam-patch.test.ts checks that
 * layout on the installed tfjs and that the patched update matches tfjs's own; it fails when an upgrade changes
 * either, which is the time to compare this file with tfjs's adam_optimizer.js again.
 */
import * as tf from '@tensorflow/tfjs';
import { activeBackendHas } from './gradients';

/** The tfjs whose AdamOptimizer this mirrors (adam_optimizer.js in @tensorflow/tfjs-core). */
export const MIRRORED_TFJS = '4.22.0';

/** A moment variable, as tfjs keeps it (OptimizerVariable). */
interface Moment {
  originalName: string;
  variable: tf.Variable;
}

/** AdamOptimizer's private state, as tfjs 4.22 keeps it: what the fused update reads and writes. */
export interface AdamInternals {
  beta1: number;
  beta2: number;
  epsilon: number;
  learningRate: number;
  /** beta1^(t+1) and beta2^(t+1) after t steps: scalar float32 variables. */
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  /** One entry per variable, in the order of the gradients, created on first use. */
  accumulatedFirstMoment: Array<Moment | undefined>;
  accumulatedSecondMoment: Array<Moment | undefined>;
  incrementIterations(): void;
}

/** Why `optimizer` lacks the private layout the fused update relies on; undefined when it has it. */
export function adamLayoutProblem(optimizer: unknown): string | undefined {
  const o = optimizer as Partial<Record<keyof AdamInternals, unknown>>;
  for (const key of ['beta1', 'beta2', 'epsilon', 'learningRate'] as const) {
    if (typeof o[key] !== 'number') return `${key} is not a number`;
  }
  for (const key of ['accBeta1', 'accBeta2'] as const) {
    const v = o[key];
    if (!(v instanceof tf.Variable) || v.rank !== 0 || v.dtype !== 'float32') return `${key} is not a float32 scalar variable`;
  }
  for (const key of ['accumulatedFirstMoment', 'accumulatedSecondMoment'] as const) {
    if (!Array.isArray(o[key])) return `${key} is not an array`;
  }
  if (typeof o.incrementIterations !== 'function') return 'incrementIterations is not a method';
  return undefined;
}

type NamedGradient = { name: string; tensor: tf.Tensor };
type ApplyGradients = (this: AdamInternals, g: tf.NamedTensorMap | NamedGradient[]) => void;

export interface FusedAdamOptions {
  /**
   * The kernel that updates one variable: inputs { value, gradient, m, v } (float32, one shape), attrs { params:
   * [beta1, 1-beta1, beta2, 1-beta2, 1-beta1^t, 1-beta2^t, epsilon, -learningRate] } (float32-rounded); outputs
   * [value', m', v'] in tfjs's order of float32 operations.
   */
  kernel: string;
  /** Checked at every applyGradients: whether to use the kernel this time (else tfjs's own method runs). */
  when: () => boolean;
}

const proto = tf.AdamOptimizer.prototype as unknown as { applyGradients: ApplyGradients };
let tfjsApplyGradients: ApplyGradients | undefined;

/** Whether AdamOptimizer's applyGradients is the fused one now. */
export function fusedAdamInstalled(): boolean {
  return tfjsApplyGradients !== undefined;
}

/** Replaces AdamOptimizer's applyGradients with the fused one (for every Adam in the process); a second call replaces the first's options. */
export function installFusedAdam(opts: FusedAdamOptions): void {
  const original = tfjsApplyGradients ?? proto.applyGradients;
  proto.applyGradients = function (variableGradients) {
    const named = Array.isArray(variableGradients);
    const grads = named ? variableGradients.map((v) => v.tensor) : Object.values(variableGradients);
    const ok = opts.when() && grads.every((g) => g == null || g.dtype === 'float32') && adamLayoutProblem(this) === undefined;
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
        const [w2, m2, v2] = tf.engine().runKernel(opts.kernel, { value, gradient, m, v }, { params } as never) as tf.Tensor[];
        m.assign(m2);
        v.assign(v2);
        value.assign(w2);
      });
      this.accBeta1.assign(tf.mul(this.accBeta1, this.beta1));
      this.accBeta2.assign(tf.mul(this.accBeta2, this.beta2));
    });
    this.incrementIterations();
  };
  tfjsApplyGradients = original;
}

/** Puts tfjs's own applyGradients back; false when the fused one was not installed. */
export function uninstallFusedAdam(): boolean {
  if (!tfjsApplyGradients) return false;
  proto.applyGradients = tfjsApplyGradients;
  tfjsApplyGradients = undefined;
  return true;
}

/** The kernel a backend registers to get the fused update (FusedAdamOptions.kernel says its inputs and outputs). */
export const FUSED_ADAM = 'FusedAdam';

/** The fused update wherever the active backend registered FUSED_ADAM; what native and wasm install. */
export const installBackendFusedAdam = (): void => installFusedAdam({ kernel: FUSED_ADAM, when: () => activeBackendHas(FUSED_ADAM) });
