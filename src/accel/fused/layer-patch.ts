/**
 * Replacing a tfjs-layers class's `call` while keeping tfjs's own for every call the replacement does not take:
 * what the batch-norm (batchnorm.ts), conv-layer (conv-layers.ts) and max-pooling (pool-layers.ts) patches share. The
 * classes are global, so a patch acts process-wide; each replacement checks that the active backend can run it
 * before it takes over.
 */
import * as tf from '@tensorflow/tfjs';

type Attrs = Record<string, unknown>;

/** A layer weight as tfjs-layers keeps it (LayerVariable). */
export interface LayerVariableLike {
  read(): tf.Variable;
  write(value: tf.Tensor): unknown;
}

export type LayerCall = (this: unknown, inputs: tf.Tensor | tf.Tensor[], kwargs: Attrs) => tf.Tensor | tf.Tensor[];

export function isLayerVariable(v: unknown): v is LayerVariableLike {
  const o = v as Partial<LayerVariableLike> | null | undefined;
  return typeof o?.read === 'function' && typeof o?.write === 'function';
}

/** The single input tensor of a layer call, or undefined (tfjs's getExactlyOneTensor, without throwing). */
export function singleInput(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor | undefined {
  if (inputs instanceof tf.Tensor) return inputs;
  return Array.isArray(inputs) && inputs.length === 1 && inputs[0] instanceof tf.Tensor ? inputs[0] : undefined;
}

export interface LayerPatch {
  install(): void;
  uninstall(): void;
  installed(): boolean;
}

/**
 * A patch of `call` on the prototype of the layers `sample()` builds: `replacement(layer, x, kwargs)` returns the
 * layer's output, or undefined to leave the call to tfjs's method. The method is set as the prototype's own
 * property, so a subclass patched this way leaves its parent class (and sibling classes) alone.
 */
export function layerCallPatch(
  sample: () => unknown,
  replacement: (layer: unknown, x: tf.Tensor, kwargs: Attrs | undefined) => tf.Tensor | undefined,
): LayerPatch {
  let proto: { call: LayerCall } | undefined;
  let tfjsCall: LayerCall | undefined;
  let hadOwnCall = false;
  const prototype = () => (proto ??= Object.getPrototypeOf(sample()) as { call: LayerCall });
  return {
    install() {
      if (tfjsCall) return;
      const p = prototype();
      const original = p.call;
      hadOwnCall = Object.prototype.hasOwnProperty.call(p, 'call');
      tfjsCall = original;
      p.call = function (this: unknown, inputs, kwargs) {
        const x = singleInput(inputs);
        const y = x ? replacement(this, x, kwargs) : undefined;
        return y ?? original.call(this, inputs, kwargs);
      };
    },
    uninstall() {
      if (!tfjsCall) return;
      const p = prototype() as { call?: LayerCall };
      if (hadOwnCall) p.call = tfjsCall;
      else delete p.call;
      tfjsCall = undefined;
    },
    installed: () => tfjsCall !== undefined,
  };
}
