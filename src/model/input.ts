/**
 * What the model takes in: grey levels 0..255 scaled to [0, 1], as training's batches are (src/data/batches.ts),
 * repeated over the channels of a model built for RGB. Evaluation, `npm run predict`, Grad-CAM and the web page
 * all build their input here (no Node APIs, so the page bundles it), so a film gets the same probability in each.
 */
import * as tf from '@tensorflow/tfjs';

/** The model's input as [height, width, channels]; an error naming the shape where it is not an image input. */
export function modelInputShape(model: tf.LayersModel): { height: number; width: number; channels: number } {
  const shape = model.inputs.length === 1 ? model.inputs[0].shape : undefined;
  if (!shape || shape.length !== 4) {
    throw new Error(
      `the model's input ${JSON.stringify(shape ?? model.inputs.map((i) => i.shape))} is not one [batch, height, width, channels] image input`,
    );
  }
  const [, height, width, channels] = shape as number[];
  if (channels !== 1 && channels !== 3) {
    throw new Error(`the model's input has ${channels} channels; only 1 (grayscale) or 3 (RGB) are supported`);
  }
  return { height, width, channels };
}

/** The square input side the model was built for. */
export function modelInputSize(model: tf.LayersModel): number {
  return modelInputShape(model).height;
}

/** A grey batch [n, h, w, 1] with its one channel repeated `channels` times (the batch itself for one). */
export function repeatGray(gray: tf.Tensor4D, channels: number): tf.Tensor4D {
  return channels === 1 ? gray : (tf.tile(gray, [1, 1, 1, channels]) as tf.Tensor4D);
}

/** One decoded image (size x size grey levels, 0..255) as the model's [1, size, size, channels] input. */
export function imageInput(model: tf.LayersModel, pixels: Uint8Array, side?: number): tf.Tensor4D {
  const { height, width, channels } = modelInputShape(model);
  const size = side ?? height;
  if (height !== size || width !== size) {
    throw new Error(`the model expects ${height}x${width} images but got ${size}x${size}; resize the image first`);
  }
  if (pixels.length !== size * size) {
    throw new Error(`the image has ${pixels.length} pixels, expected ${size}x${size} = ${size * size} grayscale values`);
  }
  return tf.tidy(() =>
    repeatGray(
      tf.tensor4d(
        Float32Array.from(pixels, (v) => v / 255),
        [1, size, size, 1],
      ),
      channels,
    ),
  );
}

/** The PNEUMONIA probability of one decoded image (size x size grey levels, 0..255). */
export function predictImage(model: tf.LayersModel, pixels: Uint8Array): number {
  return tf.tidy(() => (model.predict(imageInput(model, pixels)) as tf.Tensor).dataSync()[0]);
}
