/**
 * Models and optimizer state on disk in tfjs's own layout (`model.json` + `weights.bin`), written atomically, so a
 * run's best model and its resumable checkpoint are always complete.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
// Registers the input-normalization layer (a custom layer), so every saved model loads wherever models are read.
import '../model/normalization';
import { readJson, writeDirAtomic } from '../files';

/** A tensor with a name, as optimizers' getWeights/setWeights use. */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

function joinWeightData(data: tf.io.WeightData | undefined): ArrayBuffer {
  if (data === undefined) return new ArrayBuffer(0);
  return tf.io.CompositeArrayBuffer.join(data);
}

/** Writes the standard tfjs `model.json` + `weights.bin` pair into an existing folder (not atomic by itself). */
export function writeModelFiles(dir: string, artifacts: tf.io.ModelArtifacts): number {
  const weights = joinWeightData(artifacts.weightData);
  const modelJson: tf.io.ModelJSON = {
    modelTopology: artifacts.modelTopology as object,
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: artifacts.convertedBy ?? null,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
  };
  if (artifacts.trainingConfig) modelJson.trainingConfig = artifacts.trainingConfig;
  if (artifacts.userDefinedMetadata) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
  fs.writeFileSync(path.join(dir, MODEL_JSON), JSON.stringify(modelJson));
  fs.writeFileSync(path.join(dir, WEIGHTS_BIN), Buffer.from(weights));
  return weights.byteLength;
}

/** The model's topology and weights in memory, as `model.save` would hand them to a handler. */
export async function modelArtifacts(model: tf.LayersModel): Promise<tf.io.ModelArtifacts> {
  let captured: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      captured = artifacts;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return captured!;
}

/**
 * A tfjs IOHandler that writes `model.json` + `weights.bin` with plain fs (tfjs-node's `file://` handler is
 * not available with the pure-JS/wasm backends), atomically. The files load in the browser too.
 */
export function fileSaveHandler(dir: string): tf.io.IOHandler {
  return {
    save: async (artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> => {
      let bytes = 0;
      await writeDirAtomic(dir, (tmp) => {
        bytes = writeModelFiles(tmp, artifacts);
      });
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          modelTopologyBytes: JSON.stringify(artifacts.modelTopology).length,
          weightSpecsBytes: JSON.stringify(artifacts.weightSpecs ?? []).length,
          weightDataBytes: bytes,
        },
      };
    },
  };
}

export function fileLoadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const jsonPath = path.join(dir, MODEL_JSON);
      if (!fs.existsSync(jsonPath)) {
        throw new Error(`No saved model at ${dir} (missing ${MODEL_JSON}); pass a run folder or a model folder.`);
      }
      const modelJson = readJson<tf.io.ModelJSON>(jsonPath);
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = manifest.flatMap((group) => group.weights);
        const buffers = manifest.flatMap((group) =>
          group.paths.map((p) => {
            const file = path.join(dir, p);
            if (!fs.existsSync(file)) throw new Error(`Model weights file ${file} is missing; re-save the model.`);
            const buf = fs.readFileSync(file);
            return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
          }),
        );
        return [specs, tf.io.CompositeArrayBuffer.join(buffers)];
      });
    },
  };
}

/** Saves topology + weights to `dir/model.json` and `dir/weights.bin`, atomically. */
export async function saveModel(model: tf.LayersModel, dir: string): Promise<void> {
  await model.save(fileSaveHandler(dir));
}

export async function loadModel(dir: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(fileLoadHandler(dir));
}

/** Named tensors (optimizer state) to a JSON manifest + binary, inside an existing folder. */
export async function writeNamedTensors(dir: string, basename: string, tensors: NamedTensor[]): Promise<void> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  fs.writeFileSync(path.join(dir, `${basename}.json`), JSON.stringify(specs));
  fs.writeFileSync(path.join(dir, `${basename}.bin`), Buffer.from(data));
}

/** Reads tensors written by writeNamedTensors; the caller owns (and must dispose) them. */
export function readNamedTensors(dir: string, basename: string): NamedTensor[] {
  const specs = readJson<tf.io.WeightsManifestEntry[]>(path.join(dir, `${basename}.json`));
  const buf = fs.readFileSync(path.join(dir, `${basename}.bin`));
  const data = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  const map = tf.io.decodeWeights(data, specs);
  return specs.map((s) => ({ name: s.name, tensor: map[s.name] }));
}
