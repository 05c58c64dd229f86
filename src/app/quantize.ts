/**
 * Post-training weight quantization in the format tfjs itself decodes (`tf.io.decodeWeights` understands a
 * weight spec's `quantization` field), so a quantized model loads with the stock loader in Node and in the page.
 * Affine per-tensor quantization, as the tfjs converter's --quantize_uint8 / --quantize_uint16: each float32
 * tensor is stored as round((v - min) / scale) with scale = (max - min) / (2^bits - 1).
 */
import type * as tf from '@tensorflow/tfjs';

export type QuantizeBits = 8 | 16;

export const QUANTIZE_BITS: readonly QuantizeBits[] = [8, 16];

type WeightSpec = tf.io.WeightsManifestEntry;

function elementCount(spec: WeightSpec): number {
  return spec.shape.reduce((a, b) => a * b, 1);
}

/** The scale and offset that map [min, max] onto 0..2^bits-1; a constant tensor gets scale 1. */
export function affineRange(values: Float32Array, bits: QuantizeBits): { min: number; scale: number } {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!Number.isFinite(min) || !Number.isFinite(max)) return { min: 0, scale: 1 };
  const levels = 2 ** bits - 1;
  return { min, scale: max > min ? (max - min) / levels : 1 };
}

/** Quantized codes of one tensor; the largest code is 2^bits - 1. */
export function quantizeValues(values: Float32Array, bits: QuantizeBits, min: number, scale: number): Uint8Array | Uint16Array {
  const levels = 2 ** bits - 1;
  const out = bits === 8 ? new Uint8Array(values.length) : new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = Math.min(levels, Math.max(0, Math.round((values[i] - min) / scale)));
  return out;
}

/**
 * Weights of a model quantized to `bits`: float32 tensors become uint8/uint16 codes with their scale and
 * offset in the spec; other dtypes (int32 counters, say) are copied as they are.
 */
export function quantizeWeights(specs: WeightSpec[], data: ArrayBuffer, bits: QuantizeBits): { specs: WeightSpec[]; data: ArrayBuffer } {
  const parts: Uint8Array[] = [];
  const outSpecs: WeightSpec[] = [];
  let offset = 0;
  for (const spec of specs) {
    if (spec.quantization) throw new Error(`weight ${spec.name} is already quantized; quantize the float model`);
    const count = elementCount(spec);
    const bytes = count * 4; // float32 and int32 are the only dtypes a layers model saves
    if (offset + bytes > data.byteLength) throw new Error(`weight data ends inside ${spec.name}; the model files are damaged`);
    if (spec.dtype !== 'float32') {
      parts.push(new Uint8Array(data.slice(offset, offset + bytes)));
      outSpecs.push({ ...spec });
    } else {
      const values = new Float32Array(data.slice(offset, offset + bytes));
      const { min, scale } = affineRange(values, bits);
      const codes = quantizeValues(values, bits, min, scale);
      parts.push(new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength));
      outSpecs.push({ ...spec, quantization: { dtype: bits === 8 ? 'uint8' : 'uint16', min, scale } });
    }
    offset += bytes;
  }
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.byteLength;
  }
  return { specs: outSpecs, data: joined.buffer };
}
