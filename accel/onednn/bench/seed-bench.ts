/**
 * Steady-state training and inference throughput of the seed CNN on one backend, on random
 * data, in the same shape as the PyTorch peer's `bench` (Adam, BCE, batch 32).
 *   npx vite-node accel/onednn/bench/seed-bench.ts -- --backend native --size 150 --batch 32 --steps 5
 * Prints one JSON line. A development aid for the native backend; the project's own benchmark
 * is `npm run bench:train`.
 */
import * as tf from '@tensorflow/tfjs';
import { buildModel } from '../../../src/model';
import { nativeFallbacks, tryRegisterNative } from '../../../src/accel/onednn';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main(): Promise<void> {
  const backend = arg('backend', 'native');
  const size = Number(arg('size', '150'));
  const batch = Number(arg('batch', '32'));
  const steps = Number(arg('steps', '5'));
  const profile = process.argv.includes('--profile');
  if (backend === 'native') {
    const r = tryRegisterNative();
    if (!r.ok) throw new Error(r.why);
  }
  if (backend === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(backend);
  const model = buildModel({ variant: 'seed', imageSize: size, channels: 1, seed: 1 });
  const optimizer = tf.train.adam(1e-3);
  const x = tf.randomUniform([batch, size, size, 1]);
  const y = tf.cast(tf.randomUniform([batch, 1]).greater(0.5), 'float32');
  const step = () =>
    tf.tidy(() => {
      const cost = optimizer.minimize(() => tf.losses.sigmoidCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor), true);
      cost?.dataSync();
    });
  for (let i = 0; i < 2; i++) step();
  if (profile) {
    const info = await tf.profile(() => step());
    const byName = new Map<string, number>();
    for (const k of info.kernels) {
      byName.set(k.name, (byName.get(k.name) ?? 0) + (k.kernelTimeMs as number));
      if (process.env.BENCH_SHAPES)
        console.log(k.name, (k.kernelTimeMs as number).toFixed(1), JSON.stringify(k.inputShapes), JSON.stringify(k.outputShapes));
    }
    const top = [...byName.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25);
    for (const [n, ms] of top) console.log(n.padEnd(36), ms.toFixed(1));
    for (const [k, count] of nativeFallbacks()) console.log('fallback', count, k);
  }
  let t = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < steps; i++) step();
  const trainIps = (batch * steps) / ((performance.now() - t) / 1000);
  const cpu1 = process.cpuUsage(cpu0);
  // CPU seconds per step: steadier than wall time when other work shares the cores.
  const trainCpuS = (cpu1.user + cpu1.system) / 1e6 / steps;
  const infer = () => tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync());
  infer();
  t = performance.now();
  for (let i = 0; i < steps; i++) infer();
  const inferIps = (batch * steps) / ((performance.now() - t) / 1000);
  console.log(
    JSON.stringify({
      backend: tf.getBackend(),
      size,
      batch,
      steps,
      train_img_per_s: +trainIps.toFixed(1),
      train_cpu_s_per_step: +trainCpuS.toFixed(2),
      infer_img_per_s: +inferIps.toFixed(1),
      tensors: tf.memory().numTensors,
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
