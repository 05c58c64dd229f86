import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { DEFAULT_TRAIN, EpochLogs, TrainConfig, TrainContext, getLearningRate, setLearningRate, train } from '../src/train/train';
import { Callback, earlyStopping, historyWriter, loadLatestCheckpoint, modelCheckpoint, reduceLROnPlateau } from '../src/train/callbacks';
import { progress } from '../src/train/progress';
import { RUN_FILES } from '../src/runs/layout';
import { loadModel, saveModel } from '../src/runs/model-files';
import { syntheticImages, tinyModel, weightsOf } from './train-fixtures';

const config: TrainConfig = { ...DEFAULT_TRAIN, epochs: 4, batchSize: 8, learningRate: 1e-2, augment: { vflip: true }, seed: 5 };
const data = { train: syntheticImages(24, 16, 1), val: syntheticImages(12, 16, 2) };
let tmp: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-callbacks-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function logs(epoch: number, val_loss: number, lr = 1e-3): EpochLogs {
  return { epoch, loss: val_loss, acc: 0.5, val_loss, val_acc: 0.5, val_auc: 0.5, lr, seconds: 1 };
}

/** A context for driving callbacks by hand with scripted logs. */
function fakeContext(model: tf.LayersModel, callbacks: Callback[]): TrainContext {
  const optimizer = tf.train.adam(1e-3);
  const ctx: TrainContext = {
    model,
    optimizer,
    config,
    stopTraining: false,
    interrupted: false,
    initialEpoch: 0,
    batchesPerEpoch: 3,
    trainCount: 24,
    valCount: 12,
    history: [],
    callbacks,
    getLearningRate: () => getLearningRate(optimizer),
    setLearningRate: (lr) => setLearningRate(optimizer, lr),
  };
  return ctx;
}

/** Runs scripted epochs: before each epoch the model's first weight is filled with the epoch number. */
async function script(ctx: TrainContext, values: number[]): Promise<number> {
  let epoch = 0;
  for (const v of values) {
    if (ctx.stopTraining) break;
    epoch++;
    const w = ctx.model.getWeights();
    const filled = tf.fill(w[0].shape, epoch);
    ctx.model.setWeights([filled, ...w.slice(1)]);
    filled.dispose();
    const l = logs(epoch, v, ctx.getLearningRate());
    ctx.history.push(l);
    for (const cb of ctx.callbacks) await cb.onEpochEnd?.(epoch, l, ctx);
    for (const cb of ctx.callbacks) await cb.afterEpoch?.(epoch, l, ctx);
  }
  for (const cb of ctx.callbacks) await cb.onTrainEnd?.(ctx);
  return epoch;
}

describe('modelCheckpoint', () => {
  it('keeps the model of the best val_loss epoch (scripted)', async () => {
    const dir = path.join(tmp, 'ckpt-scripted');
    const cb = modelCheckpoint({ dir, saveLatest: false });
    const ctx = fakeContext(tinyModel(), [cb]);
    await script(ctx, [0.9, 0.4, 0.6, 0.5]);
    expect(cb.bestEpoch).toBe(2);
    const saved = await loadModel(path.join(dir, RUN_FILES.model));
    expect((await saved.getWeights()[0].data())[0]).toBe(2);
    expect(fs.existsSync(path.join(dir, RUN_FILES.latest))).toBe(false);
  });

  it("mode 'auto' maximises AUC", async () => {
    const dir = path.join(tmp, 'ckpt-auc');
    const cb = modelCheckpoint({ dir, monitor: 'val_auc', saveLatest: false });
    const ctx = fakeContext(tinyModel(), [cb]);
    let epoch = 0;
    for (const auc of [0.6, 0.8, 0.7]) {
      epoch++;
      await cb.onEpochEnd!(epoch, { ...logs(epoch, 1), val_auc: auc }, ctx);
    }
    expect(cb.bestEpoch).toBe(2);
  });
});

describe('earlyStopping', () => {
  it('stops after `patience` epochs without improvement and restores the best weights', async () => {
    const stopper = earlyStopping({ patience: 2, restoreBestWeights: true });
    const ctx = fakeContext(tinyModel(), [stopper]);
    const before = tf.memory().numTensors;
    const ran = await script(ctx, [1.0, 0.5, 0.6, 0.55, 0.1, 0.1]);
    expect(ran).toBe(4);
    expect(stopper.stoppedEpoch).toBe(4);
    expect(stopper.bestEpoch).toBe(2);
    expect((await ctx.model.getWeights()[0].data())[0]).toBe(2);
    expect(ctx.stopReason).toMatch(/val_loss did not improve for 2 epoch/);
    // The kept copy of the best weights is released at the end of training.
    expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  });

  it('minDelta: a tiny improvement does not reset patience', async () => {
    const stopper = earlyStopping({ patience: 1, minDelta: 0.01 });
    const ctx = fakeContext(tinyModel(), [stopper]);
    expect(await script(ctx, [1.0, 0.995, 0.5])).toBe(2);
  });
});

describe('reduceLROnPlateau', () => {
  it('multiplies the LR by factor after `patience` flat epochs and never goes below minLr', async () => {
    const lines: string[] = [];
    const cb = reduceLROnPlateau({ factor: 0.1, patience: 1, minLr: 2e-5, log: (l) => lines.push(l) });
    const ctx = fakeContext(tinyModel(), [cb]);
    ctx.setLearningRate(1e-3);
    const lrs: number[] = [];
    const record: Callback = { onEpochEnd: () => void lrs.push(ctx.getLearningRate()) };
    ctx.callbacks = [cb, record];
    await script(ctx, [1, 0.5, 0.6, 0.7, 0.8, 0.4]);
    expect(lrs.map((x) => +x.toExponential(6))).toEqual([1e-3, 1e-3, 1e-4, 2e-5, 2e-5, 2e-5]);
    expect(lines.length).toBe(2);
  });

  it('changes the step size of the real optimizer', async () => {
    const model = tinyModel();
    const cb: Callback = { onEpochBegin: (e, ctx) => ctx.setLearningRate(e === 2 ? 1e-9 : 1e-2) };
    const snapshots: Float32Array[][] = [];
    const snap: Callback = { onEpochEnd: async () => void snapshots.push(await weightsOf(model)) };
    const r = await train(model, data, { ...config, epochs: 2 }, [cb, snap]);
    expect(r.history.map((h) => h.lr)).toEqual([1e-2, 1e-9]);
    const change = (i: number) => Math.max(...snapshots[i][0].map((v, k) => Math.abs(v - (i ? snapshots[i - 1][0][k] : v))));
    expect(change(1)).toBeLessThan(1e-6);
    r.optimizer.dispose();
  });
});

describe('historyWriter', () => {
  it('writes history.json and history.csv after every epoch', async () => {
    const dir = path.join(tmp, 'hist');
    fs.mkdirSync(dir);
    const seen: number[] = [];
    const check: Callback = {
      onEpochEnd: (epoch) => {
        const json = JSON.parse(fs.readFileSync(path.join(dir, 'history.json'), 'utf8')) as EpochLogs[];
        seen.push(json.length);
        const csv = fs.readFileSync(path.join(dir, 'history.csv'), 'utf8').trim().split('\n');
        expect(csv[0]).toBe('epoch,loss,acc,val_loss,val_acc,val_auc,lr,seconds');
        expect(csv.length).toBe(epoch + 1);
      },
    };
    const ctx = fakeContext(tinyModel(), [historyWriter({ dir }), check]);
    await script(ctx, [0.5, 0.4, 0.3]);
    expect(seen).toEqual([1, 2, 3]);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('progress', () => {
  it("'lines' mode prints one line per epoch and the stop reason", async () => {
    const out: string[] = [];
    const stream = { write: (s: string) => out.push(s) } as unknown as NodeJS.WritableStream;
    const model = tinyModel();
    const r = await train(model, data, { ...config, epochs: 2 }, [progress({ mode: 'lines', stream, intervalSeconds: 0 })]);
    const text = out.join('');
    expect(text).toMatch(/Epoch 1\/2 {2}loss \d\.\d{4}.*val_auc/);
    expect(text).toMatch(/Epoch 2\/2/);
    expect(text).toMatch(/batch 3\/3 {2}loss/);
    r.optimizer.dispose();
  });
});

describe('resume', () => {
  it('stopping after epoch 2 and resuming to 4 gives epochs 1-4 once each, same result as an uninterrupted run', async () => {
    // Uninterrupted reference run.
    const refDir = path.join(tmp, 'ref');
    const ref = tinyModel();
    const refCkpt = modelCheckpoint({ dir: refDir });
    const refRun = await train(ref, data, config, [refCkpt, historyWriter({ dir: refDir })]);
    refRun.optimizer.dispose();
    // Real run: the checkpoint's best epoch is the one with the lowest val_loss, and its model is on disk.
    const losses = refRun.history.map((h) => h.val_loss);
    expect(refCkpt.bestEpoch).toBe(losses.indexOf(Math.min(...losses)) + 1);
    expect(fs.existsSync(path.join(refDir, RUN_FILES.model, 'weights.bin'))).toBe(true);

    // Interrupted run: early stopping with state, stop after epoch 2.
    const dir = path.join(tmp, 'resumed');
    const callbacks = () => [
      historyWriter({ dir }),
      earlyStopping({ patience: 10 }),
      reduceLROnPlateau({ patience: 1, factor: 0.5 }),
      modelCheckpoint({ dir }),
    ];
    const stopAfter2: Callback = { onEpochEnd: (e, _l, ctx) => void (e === 2 && (ctx.stopTraining = true)) };
    const first = tinyModel();
    const r1 = await train(first, data, config, [...callbacks(), stopAfter2]);
    expect(r1.history.length).toBe(2);
    r1.optimizer.dispose();
    first.dispose();

    const ckpt = await loadLatestCheckpoint(dir);
    expect(ckpt.state.epoch).toBe(2);
    expect(Object.keys(ckpt.state.callbackStates).sort()).toEqual(['earlyStopping', 'modelCheckpoint', 'reduceLROnPlateau']);
    const r2 = await train(ckpt.model, data, config, callbacks(), {
      initialEpoch: ckpt.state.epoch,
      history: ckpt.state.history,
      optimizerState: ckpt.optimizerState,
      learningRate: ckpt.state.learningRate,
      callbackStates: ckpt.state.callbackStates,
    });
    tf.dispose(ckpt.optimizerState.map((t) => t.tensor));
    expect(r2.epochsRun).toBe(2);
    const hist = JSON.parse(fs.readFileSync(path.join(dir, 'history.json'), 'utf8')) as EpochLogs[];
    expect(hist.map((h) => h.epoch)).toEqual([1, 2, 3, 4]);
    expect(r2.optimizer.iterations).toBe(4 * 3);

    // Same batches (seeded per epoch), same Adam moments: the resumed run reproduces the uninterrupted one.
    const refHist = refRun.history;
    hist.forEach((h, i) => expect(h.loss).toBeCloseTo(refHist[i].loss, 4));
    const [a, b] = [await weightsOf(ckpt.model), await weightsOf(ref)];
    a.forEach((w, i) => w.forEach((v, k) => expect(v).toBeCloseTo(b[i][k], 4)));
    r2.optimizer.dispose();
  });

  it('finds the complete checkpoint left aside when a crash hit between the two renames', async () => {
    const dir = path.join(tmp, 'crashed');
    const model = tinyModel();
    const r = await train(model, data, { ...config, epochs: 1 }, [modelCheckpoint({ dir })]);
    r.optimizer.dispose();
    const latest = path.join(dir, RUN_FILES.latest);
    fs.renameSync(latest, path.join(path.dirname(latest), '.latest.tmp-123-abc'));
    fs.mkdirSync(path.join(path.dirname(latest), '.latest.tmp-456-def')); // an unfinished write: no state.json
    const ckpt = await loadLatestCheckpoint(dir);
    expect(ckpt.state.epoch).toBe(1);
    tf.dispose(ckpt.optimizerState.map((t) => t.tensor));
  });

  it('a run without a completed epoch says it cannot be resumed', async () => {
    const empty = path.join(tmp, 'empty-run');
    fs.mkdirSync(empty);
    await expect(loadLatestCheckpoint(empty)).rejects.toThrow(/no checkpoint .* start a new run/);
  });
});

describe('saveModel / loadModel', () => {
  it('round trip gives identical predictions, and overwriting is atomic (no temp folders left)', async () => {
    const model = tinyModel();
    const r = await train(model, data, { ...config, epochs: 1 });
    r.optimizer.dispose();
    const dir = path.join(tmp, 'saved');
    await saveModel(model, dir);
    await saveModel(model, dir);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const loaded = await loadModel(dir);
    const xs = tf.randomUniform([5, 16, 16, 1], 0, 1, 'float32', 3);
    const [p1, p2] = [model.predict(xs) as tf.Tensor, loaded.predict(xs) as tf.Tensor];
    expect(Array.from(await p2.data())).toEqual(Array.from(await p1.data()));
    tf.dispose([xs, p1, p2]);
  });

  it('loading a folder without a model names the folder', async () => {
    await expect(loadModel(path.join(tmp, 'nope'))).rejects.toThrow(/No saved model at .*nope/);
  });
});

describe('progress in a notebook', () => {
  it('updates one display with a progress bar and the epoch table', async () => {
    const html: string[] = [];
    const display = { html: (s: string) => void html.push(s), text: (s: string) => void html.push(s) };
    const model = tinyModel();
    const r = await train(model, data, { ...config, epochs: 2 }, [progress({ display })]);
    r.optimizer.dispose();
    expect(html.length).toBeGreaterThanOrEqual(4);
    expect(html.some((h) => /<progress value="0" max="3"><\/progress>/.test(h))).toBe(true);
    const last = html[html.length - 1];
    expect(last).toMatch(/Done: 2 epoch\(s\)/);
    expect((last.match(/<tr><td>/g) ?? []).length).toBe(2);
  });
});

describe('notebook detection', () => {
  it('finds a running tslab kernel and updates a single display entry in place', async () => {
    const { createRequire } = await import('module');
    const req = createRequire(__filename);
    const jupyter = req('tslab/dist/jupyter') as { lastWriteDisplayData: unknown };
    const sent: Array<{ update: boolean; id: unknown }> = [];
    const { notebookDisplay } = await import('../src/train/progress');
    expect(notebookDisplay()).toBeUndefined();
    jupyter.lastWriteDisplayData = (data: { transient: { display_id: unknown } }, update: boolean) =>
      void sent.push({ update, id: data.transient.display_id });
    try {
      const display = notebookDisplay();
      expect(display).toBeDefined();
      display!.html('<b>1</b>');
      display!.html('<b>2</b>');
      expect(sent.map((s) => Boolean(s.update))).toEqual([false, true]);
      expect(sent[0].id).toBe(sent[1].id);
    } finally {
      jupyter.lastWriteDisplayData = null;
    }
  });
});
