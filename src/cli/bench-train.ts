/**
 * Training / inference throughput of the seed CNN on the selected backend, optionally side by side
 * with the PyTorch peer on the same machine.
 *
 *   npm run bench:train [-- --peer] [--rounds R] [--steps N] [--size 150] [--batch 32] [--variant seed] [--profile [--by-shape]]
 *                       [--epoch-data DIR | --no-epoch]
 *
 * The bare step is the one train() runs, on the default recipe's model; next to it, one real epoch of the default
 * recipe (augmentation, batching, progress and validation included) on the dataset, with where its time went, so
 * the step's figure and what a user waits for cannot drift apart.
 *
 * With --rounds R the timed loop runs R times, each followed by the peer, and the figures are medians over the
 * rounds with each ratio's lowest and highest: the peer wanders far more between runs than we do.
 *
 * The last line of output is one JSON object (backend, train_img_per_s, infer_img_per_s, peak_rss_mb, with a
 * dataset epoch_img_per_s and the epoch's phases, and with --peer: peer_train_img_per_s, peer_infer_img_per_s,
 * train_ratio, infer_ratio, epoch_ratio, and with several rounds train_ratio_min / _max, infer_ratio_min / _max).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../paths';
import { Command, InvalidArgumentError, Option } from 'commander';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_ORDER, BackendName, cpuDescription, describeConvChoices, describeCpu, initBackend, nativeVectorLanes } from '../accel';
import { ModelVariant, buildModel } from '../model';
import { makeTrainStep, runStep } from '../train/step';
import { balancedClassWeights } from '../train/loss';
import { DEFAULT_TRAIN, train, type EpochTiming } from '../train/train';
import { DEFAULT_PIPELINE, decode, loadData, makeSplit } from '../pipeline';
import { findPeerPython } from '../bench/peer';
import { describeNumbers } from '../viz/images';

interface BenchOptions {
  steps: number;
  warmup: number;
  rounds: number;
  size: number;
  batch: number;
  channels: number;
  variant: ModelVariant;
  backend?: BackendName;
  peer: boolean;
  peerScript: string;
  peerPython?: string;
  profile: boolean;
  /** With --profile: one row per kernel and input shapes, not per kernel. */
  byShape: boolean;
  /** The dataset of the epoch measurement; false (--no-epoch) skips it. */
  epoch: boolean;
  epochData: string;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1e6;
}

function peakRssMb(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

type ProfileRow = { kernel: string; ms: number; wallMs: number; calls: number };

/** A kernel call's input shapes, e.g. "[32,150,150,16] [3,3,16,16]". */
function shapesOf(args: unknown): string {
  const inputs = (args as { inputs?: Record<string, { shape?: number[] } | null> }).inputs ?? {};
  return Object.values(inputs)
    .map((t) => (t?.shape ? `[${t.shape.join(',')}]` : '-'))
    .join(' ');
}

/**
 * CPU time per kernel of one call of f, summed by kernel name, largest first. CPU time rather than wall
 * time (tf.profile) so that other processes on a shared machine do not inflate it. Kernels called from
 * inside other kernels count toward the outer kernel only. byShape: one row per kernel and its inputs' shapes.
 */
export function profileKernels(f: () => unknown, byShape = false): ProfileRow[] {
  const backendName = tf.getBackend();
  const originals = tf.getKernelsForBackend(backendName);
  const totals = new Map<string, { us: number; wallMs: number; calls: number }>();
  let depth = 0;
  for (const config of originals) {
    tf.unregisterKernel(config.kernelName, backendName);
    tf.registerKernel({
      ...config,
      setupFunc: undefined, // already set up when the backend initialised
      kernelFunc: ((args: never) => {
        if (depth > 0) return config.kernelFunc(args);
        depth++;
        const start = process.cpuUsage();
        const wallStart = performance.now();
        try {
          return config.kernelFunc(args);
        } finally {
          const d = process.cpuUsage(start);
          depth--;
          const key = byShape ? `${config.kernelName} ${shapesOf(args)}` : config.kernelName;
          const entry = totals.get(key) ?? { us: 0, wallMs: 0, calls: 0 };
          entry.us += d.user + d.system;
          entry.wallMs += performance.now() - wallStart;
          entry.calls++;
          totals.set(key, entry);
        }
      }) as typeof config.kernelFunc,
    });
  }
  try {
    tf.tidy(() => {
      f();
    });
  } finally {
    for (const config of originals) {
      tf.unregisterKernel(config.kernelName, backendName);
      tf.registerKernel(config);
    }
  }
  return [...totals.entries()]
    .map(([kernel, v]) => ({ kernel, ms: Math.round(v.us / 100) / 10, wallMs: Math.round(v.wallMs * 10) / 10, calls: v.calls }))
    .sort((a, b) => b.ms - a.ms);
}

function formatProfile(rows: ProfileRow[], top: number): string {
  const width = Math.max(36, ...rows.slice(0, top).map((r) => r.kernel.length));
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const lines = rows
    .slice(0, top)
    .map(
      (r) =>
        `  ${r.kernel.padEnd(width)} ${r.ms.toFixed(1).padStart(9)} ms cpu ${r.wallMs.toFixed(1).padStart(9)} ms wall ${String(r.calls).padStart(5)} calls ${((100 * r.ms) / total).toFixed(1).padStart(5)}%`,
    );
  const wall = rows.reduce((s, r) => s + r.wallMs, 0);
  return [
    `kernel time of one training step: ${total.toFixed(0)} ms CPU (all threads), ${wall.toFixed(0)} ms wall (top ${Math.min(top, rows.length)} kernels by CPU)`,
    ...lines,
  ].join('\n');
}

export interface PeerResult {
  train_img_per_s: number;
  infer_img_per_s: number;
  threads?: number;
  torch?: string;
}

function checkPeerScript(opts: BenchOptions): void {
  if (!fs.existsSync(opts.peerScript)) {
    throw new Error(`--peer: PyTorch peer script not found at ${opts.peerScript} (set --peer-script or PNEUMO_PEER_SCRIPT).`);
  }
}

function runPeer(opts: BenchOptions, python: string): PeerResult {
  const args = [
    opts.peerScript,
    'bench',
    '--size',
    String(opts.size),
    '--channels',
    String(opts.channels),
    '--batch',
    String(opts.batch),
    '--steps',
    String(opts.steps),
  ];
  const res = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (res.error)
    throw new Error(`--peer: could not run ${python} (${res.error.message}); run 'npm run bench:peer-setup' or pass --peer-python.`);
  const lastJson = res.stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (res.status !== 0 || !lastJson) {
    throw new Error(
      `--peer: '${python} ${args.join(' ')}' failed (exit ${res.status}): ${res.stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
  }
  return JSON.parse(lastJson) as PeerResult;
}

export type BenchResult = Record<string, string | number>;

/** One round of the timed loop: ours, then (with --peer) the peer right after, so each ratio compares neighbours in time. */
export interface BenchRound {
  train: Timing;
  infer: Timing;
  peer?: PeerResult;
}

/** Throughput of a timed loop, with the CPU seconds (all threads) and wall seconds it took. */
export interface Timing {
  imgPerS: number;
  cpuS: number;
  wallS: number;
}

/** x to `digits` decimals, as the JSON reports figures. */
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** A round's ratios: ours over the peer measured right after it. */
function ratiosOf(r: BenchRound & { peer: PeerResult }): { train: number; infer: number } {
  return { train: r.train.imgPerS / r.peer.train_img_per_s, infer: r.infer.imgPerS / r.peer.infer_img_per_s };
}

/** Images per second of `calls` calls of f, each of one batch, with the CPU time they took. */
function timeCalls(f: () => unknown, calls: number, batch: number): Timing {
  const started = performance.now();
  const cpu = process.cpuUsage();
  for (let i = 0; i < calls; i++) f();
  const wallS = (performance.now() - started) / 1000;
  return { imgPerS: (batch * calls) / wallS, cpuS: cpuSeconds(cpu), wallS };
}

/**
 * opts.rounds rounds of: opts.steps training steps, opts.steps predictions, then the peer's bench. The peer's
 * throughput wanders by a third between runs minutes apart on these shared machines while ours holds within a few
 * percent, so one pair of numbers says little about the ratio; rounds give its spread.
 */
function measureRounds(opts: BenchOptions, step: () => unknown, predict: () => unknown, peer?: () => PeerResult): BenchRound[] {
  const rounds: BenchRound[] = [];
  for (let r = 1; r <= opts.rounds; r++) {
    const train = timeCalls(step, opts.steps, opts.batch);
    const infer = timeCalls(predict, opts.steps, opts.batch);
    const label = opts.rounds > 1 ? `round ${r}/${opts.rounds} ` : '';
    console.log(`${label}train: ${opts.steps} steps in ${train.wallS.toFixed(2)} s = ${train.imgPerS.toFixed(1)} img/s`);
    console.log(`${label}infer: ${opts.steps} batches in ${infer.wallS.toFixed(2)} s = ${infer.imgPerS.toFixed(1)} img/s`);
    if (!peer) {
      rounds.push({ train, infer });
      continue;
    }
    console.log(`${label}running the PyTorch peer on the same input shape ...`);
    const measured = { train, infer, peer: peer() };
    const ratios = ratiosOf(measured);
    console.log(
      `${label}peer: train ${measured.peer.train_img_per_s} img/s, infer ${measured.peer.infer_img_per_s} img/s; ratios ` +
        `${ratios.train.toFixed(2)}x / ${ratios.infer.toFixed(2)}x`,
    );
    rounds.push(measured);
  }
  return rounds;
}

/**
 * The benchmark's figures from its rounds: medians of ours and of the peer's throughput, the median of the
 * rounds' ratios (each ours over the peer measured right after it), and with several rounds, each ratio's
 * lowest and highest. CPU and wall seconds are totals over the rounds.
 */
export function summarizeRounds(rounds: readonly BenchRound[]): BenchResult {
  const median = (f: (r: BenchRound) => number) => describeNumbers(rounds.map(f)).median;
  const total = (f: (r: BenchRound) => number) =>
    round(
      rounds.reduce((s, r) => s + f(r), 0),
      2,
    );
  const summary: BenchResult = {
    rounds: rounds.length,
    train_img_per_s: round(median((r) => r.train.imgPerS)),
    infer_img_per_s: round(median((r) => r.infer.imgPerS)),
    // CPU seconds per timed phase: on a busy machine wall time inflates; cpu time shows the work done.
    train_cpu_s: total((r) => r.train.cpuS),
    train_wall_s: total((r) => r.train.wallS),
    infer_cpu_s: total((r) => r.infer.cpuS),
    infer_wall_s: total((r) => r.infer.wallS),
  };
  const withPeer = rounds.filter((r): r is BenchRound & { peer: PeerResult } => r.peer !== undefined);
  if (withPeer.length !== rounds.length || rounds.length === 0) return summary;
  summary.peer_threads = withPeer[0].peer.threads ?? 0;
  const peerMedian = (f: (p: PeerResult) => number) => round(describeNumbers(withPeer.map((r) => f(r.peer))).median);
  summary.peer_train_img_per_s = peerMedian((p) => p.train_img_per_s);
  summary.peer_infer_img_per_s = peerMedian((p) => p.infer_img_per_s);
  const ratios = {
    train_ratio: describeNumbers(withPeer.map((r) => ratiosOf(r).train)),
    infer_ratio: describeNumbers(withPeer.map((r) => ratiosOf(r).infer)),
  };
  for (const [key, d] of Object.entries(ratios)) {
    summary[key] = round(d.median, 2);
    if (rounds.length > 1) {
      summary[`${key}_min`] = round(d.min, 2);
      summary[`${key}_max`] = round(d.max, 2);
    }
  }
  return summary;
}

/** "against the peer (median of 3 rounds, lowest-highest): training 2.59x (2.51-2.85), prediction ..."; undefined without the peer. */
export function describeRatios(result: BenchResult): string | undefined {
  if (typeof result.train_ratio !== 'number') return undefined;
  const spread = (key: string) => (typeof result[`${key}_min`] === 'number' ? ` (${result[`${key}_min`]}-${result[`${key}_max`]})` : '');
  const parts = [`training ${result.train_ratio}x${spread('train_ratio')}`, `prediction ${result.infer_ratio}x${spread('infer_ratio')}`];
  if (typeof result.epoch_ratio === 'number') parts.push(`one epoch end to end ${result.epoch_ratio}x the peer's bare step`);
  const rounds = Number(result.rounds) > 1 ? `median of ${result.rounds} rounds, lowest-highest` : 'one round';
  return `against the peer (${rounds}): ${parts.join(', ')}`;
}

async function bench(opts: BenchOptions): Promise<BenchResult> {
  // Fail before minutes of benchmarking, not after.
  if (opts.peer) checkPeerScript(opts);
  const peerPython = opts.peer ? findPeerPython(repoRoot, opts.peerPython) : undefined;
  if (peerPython) console.log(`peer: PyTorch ${peerPython.torch} (${peerPython.python})`);
  const backend = await initBackend({ prefer: opts.backend });
  const cpu = cpuDescription({ nativeVectorLanes: nativeVectorLanes() });
  console.log(describeCpu(cpu));
  const model = buildModel({
    variant: opts.variant,
    imageSize: opts.size,
    channels: opts.channels,
    seed: 1,
    normalize: DEFAULT_PIPELINE.normalize,
  });
  const optimizer = tf.train.adam(1e-3);
  const xs = tf.randomUniform([opts.batch, opts.size, opts.size, opts.channels], 0, 1, 'float32', 1) as tf.Tensor4D;
  const labels = Array.from({ length: opts.batch }, (_, i) => (i % 4 === 0 ? 0 : 1));
  const ys = tf.tensor1d(labels);
  // train()'s step with the default recipe's settings (class weights as train() computes them, when the recipe has them).
  const trainStep = makeTrainStep(model, optimizer, {
    seed: DEFAULT_TRAIN.seed,
    classWeights: DEFAULT_TRAIN.classWeights === 'balanced' ? balancedClassWeights(labels) : undefined,
    labelSmoothing: DEFAULT_TRAIN.labelSmoothing,
    mixup: DEFAULT_TRAIN.mixup,
  });
  let stepIndex = 0;
  const step = (x: tf.Tensor4D, y: tf.Tensor) => runStep(trainStep, x, y, stepIndex++);
  console.log(
    `seed CNN '${opts.variant}' ${opts.size}x${opts.size}x${opts.channels}, batch ${opts.batch}, ${model.countParams().toLocaleString('en-US')} params`,
  );

  for (let i = 0; i < opts.warmup; i++) step(xs, ys);
  if (opts.profile)
    console.log(
      formatProfile(
        profileKernels(() => step(xs, ys), opts.byShape),
        opts.byShape ? 40 : 15,
      ),
    );

  const predict = () => tf.tidy(() => (model.predict(xs) as tf.Tensor).dataSync());
  predict();
  const peerRun = peerPython ? () => runPeer(opts, peerPython.python) : undefined;
  const rounds = measureRounds(opts, () => step(xs, ys), predict, peerRun);
  const convChoices = describeConvChoices();
  if (convChoices) console.log(`conv algorithms timed and chosen: ${convChoices}`);
  tf.dispose([xs, ys]);
  optimizer.dispose();
  model.dispose();

  const result: BenchResult = {
    backend: backend.name,
    threads: backend.threads,
    variant: opts.variant,
    size: opts.size,
    batch: opts.batch,
    steps: opts.steps,
    ...cpu,
    ...summarizeRounds(rounds),
    peak_rss_mb: peakRssMb(),
  };
  if (peerPython) result.peer_torch = rounds[0].peer?.torch ?? peerPython.torch;
  const epoch = opts.epoch ? await benchEpoch(opts) : undefined;
  if (epoch) Object.assign(result, epoch);
  if (epoch && typeof result.peer_train_img_per_s === 'number') {
    result.epoch_ratio = round(epoch.epoch_img_per_s / result.peer_train_img_per_s, 2);
  }
  const ratios = describeRatios(result);
  if (ratios) console.log(ratios);
  console.log(JSON.stringify(result));
  return result;
}

type EpochResult = Record<`epoch_${string}`, number>;

/**
 * One epoch of the default recipe (its split, augmentation, class weights, batch size and validation splits) on
 * the dataset, through train() itself; undefined, with the reason printed, when there is no dataset to use.
 */
async function benchEpoch(opts: BenchOptions): Promise<EpochResult | undefined> {
  if (opts.channels !== 1) {
    console.log('epoch: skipped (the dataset is grayscale; --channels 1 measures it)');
    return undefined;
  }
  if (!fs.existsSync(opts.epochData)) {
    console.log(`epoch: skipped (no dataset at ${opts.epochData}; pass --epoch-data DIR, or --no-epoch)`);
    return undefined;
  }
  const quiet = () => undefined;
  const ds = await loadData(opts.epochData, { log: quiet });
  const split = await makeSplit(ds, { ...DEFAULT_PIPELINE.split, log: quiet });
  const decoded = await decode(split, { imageSize: opts.size, log: quiet });
  const model = buildModel({
    variant: opts.variant,
    imageSize: opts.size,
    seed: DEFAULT_TRAIN.seed,
    normalize: DEFAULT_PIPELINE.normalize,
  });
  const images = decoded.train.labels.length;
  const validation = decoded.val.labels.length + (decoded.valTime?.labels.length ?? 0);
  console.log(`epoch: one epoch of the default recipe on ${opts.epochData}: ${images} training images, ${validation} validation ...`);
  let timing: EpochTiming = { batches: 0, steps: 0, callbacks: 0, validation: 0 };
  const started = performance.now();
  const result = await train(model, decoded, { ...DEFAULT_PIPELINE.train, epochs: 1, batchSize: opts.batch }, [], {
    onEpochTiming: (_epoch, t) => (timing = { ...t }),
  });
  const seconds = (performance.now() - started) / 1000;
  result.optimizer.dispose();
  model.dispose();
  const epochIps = images / seconds;
  console.log(`epoch: ${seconds.toFixed(1)} s = ${epochIps.toFixed(1)} training img/s end to end`);
  for (const [phase, s] of Object.entries(timing)) {
    console.log(`  ${phase.padEnd(11)} ${s.toFixed(1).padStart(6)} s ${((100 * s) / seconds).toFixed(1).padStart(5)}%`);
  }
  return {
    epoch_images: images,
    epoch_validation_images: validation,
    epoch_s: round(seconds),
    epoch_img_per_s: round(epochIps),
    epoch_batches_s: round(timing.batches, 2),
    epoch_steps_s: round(timing.steps, 2),
    epoch_callbacks_s: round(timing.callbacks, 2),
    epoch_validation_s: round(timing.validation, 2),
  };
}

/** $PNEUMO_DATA, else the shared training data beside the checkout, else data/chest_xray. */
function defaultEpochData(): string {
  if (process.env.PNEUMO_DATA) return process.env.PNEUMO_DATA;
  const shared = path.resolve(repoRoot, '../shared/data/chest_xray');
  return fs.existsSync(shared) ? shared : path.resolve(repoRoot, DEFAULT_PIPELINE.data);
}

function parseOptions(argv: string[]): BenchOptions {
  const defaultPeer = process.env.PNEUMO_PEER_SCRIPT ?? path.resolve(__dirname, '../../../shared/peer/seed_cnn_torch.py');
  const program = new Command('bench-train')
    .description('Training and inference throughput of the pneumonia CNN on the selected tfjs backend')
    .option('--steps <n>', 'timed steps (training and inference each)', positiveInt, 5)
    .option('--warmup <n>', 'untimed warm-up training steps', positiveInt, 2)
    .option('--rounds <n>', 'timed rounds, each ours then the peer; medians and ratio spread over them', positiveInt, 1)
    .option('--size <px>', 'input side', positiveInt, 150)
    .option('--batch <n>', 'batch size', positiveInt, 32)
    .option('--channels <n>', 'input channels (1 or 3)', positiveInt, 1)
    .addOption(new Option('--variant <name>', 'model variant').choices(['seed', 'small']).default('seed'))
    .addOption(new Option('--backend <name>', 'force a backend (else PNEUMO_BACKEND or automatic)').choices([...BACKEND_ORDER]))
    .option('--peer', 'also run the PyTorch peer bench and report ratios', false)
    .option('--peer-script <file>', 'path of seed_cnn_torch.py', defaultPeer)
    .option('--peer-python <exe>', 'python with torch installed (default: .venv-peer, else Debian python3, else python3)')
    .option('--profile', 'print per-kernel times of one training step', false)
    .option('--by-shape', "with --profile: a row per kernel and its inputs' shapes", false)
    .option('--epoch-data <dir>', 'dataset of the one-epoch measurement', defaultEpochData())
    .option('--no-epoch', 'skip the one-epoch measurement')
    .parse(argv);
  return program.opts<BenchOptions>();
}

/** Parses argv (node-style: [node, script, ...flags]), runs the benchmark, returns the JSON it printed last. */
export function runBenchTrain(argv: string[]): Promise<BenchResult> {
  return bench(parseOptions(argv));
}

export function main(argv: string[]): void {
  runBenchTrain(argv).catch((err: unknown) => {
    console.error(`bench-train: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}

if (require.main === module) main(process.argv);
