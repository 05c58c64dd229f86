/**
 * The training loop: Adam with a learning rate callbacks may change, binary cross-entropy with optional
 * per-sample class weights, a training-mode forward pass (dropout on, batch-norm batch statistics), and
 * per-epoch validation loss / accuracy / AUC on the validation split (never the test set).
 *
 * A custom loop rather than `model.fit` because fit cannot weight samples per batch with our own batch
 * generator, cannot persist Adam's moments for an exact resume, and cannot stop cleanly on Ctrl-C.
 */
import * as tf from '@tensorflow/tfjs';
import type { DecodedImages } from '../types';
import { batchCount, epochBatches, epochSize } from '../data/batches';
import { predictProbabilities } from '../evaluate';
import { rocAuc } from '../evaluate/metrics';
import { logLoss } from '../evaluate/calibration';
import type { BatchLogs, Callback, EpochLogs, EpochTiming, TrainConfig, TrainContext } from './types';
import { balancedClassWeights } from './loss';
import { makeTrainStep } from './step';
import type { NamedTensor } from '../runs/model-files';

export * from './types';

export interface TrainOptions {
  /** Epochs already completed (resume); training continues with epoch initialEpoch + 1. */
  initialEpoch?: number;
  /** Adam's iteration count and moments, from `optimizer.getWeights()`; the caller keeps ownership. */
  optimizerState?: NamedTensor[];
  history?: EpochLogs[];
  learningRate?: number;
  callbackStates?: Record<string, unknown>;
  /** Abort the current epoch (e.g. on Ctrl-C); the completed epochs stay valid. */
  signal?: AbortSignal;
  /** Install a SIGINT handler for the duration of training (CLI use): first Ctrl-C stops cleanly. */
  handleSigint?: boolean;
  /** Where the notice about Ctrl-C goes. */
  log?: (line: string) => void;
  /** Called after each completed epoch with where its time went. */
  onEpochTiming?: (epoch: number, timing: EpochTiming) => void;
}

export interface TrainResult {
  history: EpochLogs[];
  /** Epochs completed in this call. */
  epochsRun: number;
  /** Total completed epochs (including resumed ones). */
  completedEpochs: number;
  stoppedEarly: boolean;
  interrupted: boolean;
  stopReason?: string;
  /** The optimizer used; the caller may save or dispose it. */
  optimizer: tf.AdamOptimizer;
}

export function getLearningRate(optimizer: tf.AdamOptimizer): number {
  return (optimizer as unknown as { learningRate: number }).learningRate;
}

/** Adam reads `learningRate` on every step, so assigning it takes effect on the next batch. */
export function setLearningRate(optimizer: tf.AdamOptimizer, lr: number): void {
  (optimizer as unknown as { learningRate: number }).learningRate = lr;
}

/** Unweighted loss, accuracy at 0.5 and ROC AUC, computed from probabilities. */
export function lossAccAuc(labels: ArrayLike<number>, probs: ArrayLike<number>): { loss: number; acc: number; auc: number } {
  if (labels.length === 0) return { loss: NaN, acc: NaN, auc: NaN };
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    if ((probs[i] >= 0.5 ? 1 : 0) === (labels[i] ? 1 : 0)) correct++;
  }
  return { loss: logLoss(labels, probs), acc: correct / labels.length, auc: rocAuc(labels, probs) };
}

async function runCallbacks(callbacks: readonly Callback[], call: (cb: Callback) => void | Promise<void> | undefined): Promise<void> {
  for (const cb of callbacks) await call(cb);
}

function checkConfig(config: TrainConfig, data: { train: DecodedImages; val: DecodedImages }): void {
  const problems: string[] = [];
  if (!(Number.isInteger(config.epochs) && config.epochs >= 1)) problems.push(`epochs must be an integer >= 1 (got ${config.epochs})`);
  if (!(Number.isInteger(config.batchSize) && config.batchSize >= 1))
    problems.push(`batchSize must be an integer >= 1 (got ${config.batchSize})`);
  if (!(config.learningRate > 0)) problems.push(`learningRate must be > 0 (got ${config.learningRate})`);
  if (config.classWeights !== 'balanced' && config.classWeights !== 'none')
    problems.push(`classWeights must be 'balanced' or 'none' (got ${config.classWeights})`);
  if (data.train.labels.length === 0) problems.push('the training split is empty');
  const smoothing = config.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing < 1)) problems.push(`labelSmoothing must be in [0, 1) (got ${smoothing})`);
  const mixup = config.mixup ?? 0;
  if (!(mixup >= 0 && Number.isFinite(mixup))) problems.push(`mixup must be a number >= 0 (got ${mixup})`);
  if (problems.length) throw new Error(`Invalid training setup: ${problems.join('; ')}.`);
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Adds the seconds since the previous lap to the phase named, so an epoch's phases sum to its wall time. */
function phaseClock(): { lap: (phase: keyof EpochTiming) => void; totals: EpochTiming } {
  const totals: EpochTiming = { batches: 0, steps: 0, callbacks: 0, validation: 0 };
  let last = performance.now();
  return {
    totals,
    lap: (phase) => {
      const now = performance.now();
      totals[phase] += (now - last) / 1000;
      last = now;
    },
  };
}

/**
 * Trains `model` in place. Callbacks run in order at each hook; `afterEpoch` hooks run after every
 * callback's `onEpochEnd`, so checkpoints capture the counters other callbacks just updated.
 */
export async function train(
  model: tf.LayersModel,
  data: { train: DecodedImages; val: DecodedImages; valTime?: DecodedImages },
  config: TrainConfig,
  callbacks: Callback[] = [],
  opts: TrainOptions = {},
): Promise<TrainResult> {
  checkConfig(config, data);
  const log = opts.log ?? ((line: string) => console.error(line));
  const initialEpoch = opts.initialEpoch ?? 0;
  const optimizer = tf.train.adam(opts.learningRate ?? config.learningRate);
  if (opts.optimizerState && opts.optimizerState.length > 0) {
    const expected = 1 + 2 * model.trainableWeights.length;
    if (opts.optimizerState.length !== expected) {
      throw new Error(
        `Cannot resume: the checkpoint's optimizer state has ${opts.optimizerState.length} tensors but this model needs ${expected}; ` +
          'was the checkpoint written by a different model variant?',
      );
    }
    await optimizer.setWeights(opts.optimizerState);
  }

  const step = makeTrainStep(model, optimizer, {
    seed: config.seed,
    classWeights: config.classWeights === 'balanced' ? balancedClassWeights(data.train.labels) : undefined,
    labelSmoothing: config.labelSmoothing,
    mixup: config.mixup,
  });
  const trainCount = data.train.labels.length;
  const ctx: TrainContext = {
    model,
    optimizer,
    config,
    stopTraining: false,
    interrupted: false,
    initialEpoch,
    batchesPerEpoch: batchCount(epochSize(data.train.labels, { balance: config.balance ?? 'none' }), { batchSize: config.batchSize }),
    trainCount,
    valCount: data.val.labels.length,
    history: [...(opts.history ?? [])].slice(0, initialEpoch),
    callbacks,
    getLearningRate: () => getLearningRate(optimizer),
    setLearningRate: (lr: number) => setLearningRate(optimizer, lr),
  };
  for (const cb of callbacks) {
    const state = cb.name ? opts.callbackStates?.[cb.name] : undefined;
    if (state !== undefined && cb.setState) cb.setState(state);
  }

  const interrupt = (why: string) => {
    if (ctx.interrupted) return;
    ctx.interrupted = true;
    ctx.stopTraining = true;
    ctx.stopReason = why;
  };
  const onAbort = () => interrupt('aborted');
  opts.signal?.addEventListener('abort', onAbort);
  if (opts.signal?.aborted) onAbort();
  let sigints = 0;
  const onSigint = () => {
    sigints++;
    if (sigints === 1) {
      log('\nCtrl-C: abandoning the current epoch; completed epochs are saved. Press Ctrl-C again to quit at once.');
      interrupt('interrupted (Ctrl-C)');
    } else {
      process.exit(130);
    }
  };
  if (opts.handleSigint) process.on('SIGINT', onSigint);

  let epochsRun = 0;
  try {
    await runCallbacks(callbacks, (cb) => cb.onTrainBegin?.(ctx));
    for (let epoch = initialEpoch; epoch < config.epochs && !ctx.stopTraining; epoch++) {
      const epochNumber = epoch + 1;
      const started = Date.now();
      await runCallbacks(callbacks, (cb) => cb.onEpochBegin?.(epochNumber, ctx));
      // Read after onEpochBegin: a schedule may set this epoch's rate there.
      const lr = getLearningRate(optimizer);

      let lossSum = 0;
      let correct = 0;
      let seen = 0;
      let batch = 0;
      const clock = phaseClock();
      const batches = epochBatches(data.train, {
        batchSize: config.batchSize,
        shuffle: true,
        seed: config.seed,
        epoch,
        augment: config.augment,
        balance: config.balance ?? 'none',
      });
      for (const { xs, ys } of batches) {
        clock.lap('batches');
        if (ctx.interrupted) break;
        const { loss, probs } = step(xs, ys, epoch * ctx.batchesPerEpoch + batch);
        const hits = tf.tidy(() => tf.sum(tf.equal(tf.greaterEqual(probs.reshape([-1]), 0.5).toFloat(), ys.reshape([-1]).toFloat())));
        const [lossValue] = await loss.data();
        const [hitCount] = await hits.data();
        tf.dispose([loss, hits, probs]);
        const size = xs.shape[0];
        lossSum += lossValue * size;
        correct += hitCount;
        seen += size;
        const batchLogs: BatchLogs = { batch, size, loss: lossValue };
        batch++;
        clock.lap('steps');
        await runCallbacks(callbacks, (cb) => cb.onBatchEnd?.(batchLogs.batch, batchLogs, ctx));
        // Lets SIGINT / abort handlers run between batches.
        await yieldToEventLoop();
        clock.lap('callbacks');
      }
      if (ctx.interrupted) break;

      // At the training batch size, validation reuses the step's convolution primitives and pooled buffers.
      const predict = (images: DecodedImages) => predictProbabilities(model, images, config.batchSize);
      const valProbs = data.val.labels.length ? await predict(data.val) : new Float32Array(0);
      const val = lossAccAuc(data.val.labels, valProbs);
      const valTime = data.valTime?.labels.length ? lossAccAuc(data.valTime.labels, await predict(data.valTime)) : undefined;
      const logs: EpochLogs = {
        epoch: epochNumber,
        loss: seen ? lossSum / seen : NaN,
        acc: seen ? correct / seen : NaN,
        val_loss: val.loss,
        val_acc: val.acc,
        val_auc: val.auc,
        ...(valTime ? { val_time_loss: valTime.loss, val_time_acc: valTime.acc, val_time_auc: valTime.auc } : {}),
        lr,
        seconds: (Date.now() - started) / 1000,
      };
      clock.lap('validation');
      opts.onEpochTiming?.(epochNumber, clock.totals);
      ctx.history.push(logs);
      epochsRun++;
      await runCallbacks(callbacks, (cb) => cb.onEpochEnd?.(epochNumber, logs, ctx));
      await runCallbacks(callbacks, (cb) => cb.afterEpoch?.(epochNumber, logs, ctx));
    }
    await runCallbacks(callbacks, (cb) => cb.onTrainEnd?.(ctx));
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (opts.handleSigint) process.removeListener('SIGINT', onSigint);
  }

  return {
    history: ctx.history,
    epochsRun,
    completedEpochs: ctx.history.length,
    stoppedEarly: ctx.stopTraining && !ctx.interrupted,
    interrupted: ctx.interrupted,
    stopReason: ctx.stopReason,
    optimizer,
  };
}
