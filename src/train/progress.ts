/**
 * Training progress for three audiences: a cli-progress bar on a terminal, plain periodic lines when output
 * is piped or logged (no cursor tricks in log files), and a single live-updating HTML display in a tslab
 * notebook (tslab's `newDisplay()` re-sends update_display_data for the same display id).
 */
import * as cliProgress from 'cli-progress';
import type { Callback } from './callbacks';
import type { EpochLogs, TrainContext } from './types';

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'notebook' | 'silent';

export interface ProgressOptions {
  mode?: ProgressMode;
  /** Terminal/lines output; default process.stdout. */
  stream?: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Seconds between batch lines in 'lines' mode (default 15). */
  intervalSeconds?: number;
  /**
   * The notebook display to update, e.g. `require('tslab').newDisplay()` from a notebook cell; implies 'notebook'
   * mode. Without it, 'auto' detects a tslab kernel by itself.
   */
  display?: NotebookDisplay;
}

/** The subset of tslab's Display that we use. */
export interface NotebookDisplay {
  html(s: string): void;
  text(s: string): void;
}

/**
 * A display that updates in place when running inside a tslab kernel, else undefined. The kernel has already
 * loaded tslab's jupyter module; looking in the require cache (instead of requiring it) keeps plain Node runs
 * from loading tslab and its TypeScript compiler just to find out.
 */
export function notebookDisplay(): NotebookDisplay | undefined {
  try {
    const cached = require.cache[require.resolve('tslab/dist/jupyter')];
    const jupyter = cached?.exports as { lastWriteDisplayData?: unknown } | undefined;
    if (jupyter?.lastWriteDisplayData == null) return undefined;
    return (require('tslab') as { newDisplay(): NotebookDisplay }).newDisplay();
  } catch {
    return undefined;
  }
}

function fmt(value: number, digits = 4): string {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value);
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** `Epoch 3/10  loss 0.4123  acc 0.8120  val_loss ...  lr 1.00e-3  12.3s` */
export function formatEpochLine(logs: EpochLogs, totalEpochs: number): string {
  return (
    `Epoch ${logs.epoch}/${totalEpochs}  loss ${fmt(logs.loss)}  acc ${fmt(logs.acc)}  ` +
    `val_loss ${fmt(logs.val_loss)}  val_acc ${fmt(logs.val_acc)}  val_auc ${fmt(logs.val_auc)}  ` +
    (logs.val_time_auc !== undefined ? `val_time_auc ${fmt(logs.val_time_auc)}  ` : '') +
    `lr ${logs.lr.toExponential(2)}  ${logs.seconds.toFixed(1)}s`
  );
}

function expectedBatches(ctx: TrainContext): number {
  return ctx.batchesPerEpoch;
}

function resolveMode(mode: ProgressMode, stream: NodeJS.WritableStream): Exclude<ProgressMode, 'auto'> {
  if (mode !== 'auto') return mode;
  if (notebookDisplay()) return 'notebook';
  return (stream as NodeJS.WriteStream).isTTY ? 'bar' : 'lines';
}

export function progress(opts: ProgressOptions = {}): Callback {
  const stream = opts.stream ?? process.stdout;
  const mode = opts.display ? 'notebook' : resolveMode(opts.mode ?? 'auto', stream);
  const write = (line: string) => stream.write(line + '\n');
  switch (mode) {
    case 'silent':
      return {};
    case 'bar':
      return barProgress(stream as NodeJS.WriteStream, write);
    case 'notebook':
      return notebookProgress(opts.display ?? notebookDisplay());
    default:
      return lineProgress(write, (opts.intervalSeconds ?? 15) * 1000);
  }
}

function barProgress(stream: NodeJS.WriteStream, write: (line: string) => void): Callback {
  let bar: cliProgress.SingleBar | undefined;
  let lossSum = 0;
  let seen = 0;
  const stopBar = () => {
    bar?.stop();
    bar = undefined;
  };
  return {
    onEpochBegin(epoch, ctx) {
      lossSum = 0;
      seen = 0;
      bar = new cliProgress.SingleBar(
        {
          stream,
          format: `Epoch ${epoch}/${ctx.config.epochs} {bar} {value}/{total} batches | loss {loss} | ETA {eta_formatted}`,
          hideCursor: false,
          etaBuffer: 20,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(expectedBatches(ctx), 0, { loss: '-' });
    },
    onBatchEnd(batch, logs) {
      lossSum += logs.loss * logs.size;
      seen += logs.size;
      bar?.update(batch + 1, { loss: fmt(lossSum / seen) });
    },
    onEpochEnd(_epoch, logs, ctx) {
      stopBar();
      write(formatEpochLine(logs, ctx.config.epochs));
    },
    onTrainEnd(ctx) {
      stopBar();
      if (ctx.interrupted) write('Training interrupted; the last completed epoch is saved.');
      else if (ctx.stopReason) write(`Stopped: ${ctx.stopReason}`);
    },
  };
}

function lineProgress(write: (line: string) => void, intervalMs: number): Callback {
  let epochStart = 0;
  let lastLine = 0;
  let lossSum = 0;
  let seen = 0;
  return {
    onTrainBegin(ctx) {
      const from = ctx.initialEpoch ? ` (resuming after epoch ${ctx.initialEpoch})` : '';
      write(`Training ${ctx.trainCount} images, validating on ${ctx.valCount}, ${ctx.config.epochs} epochs${from}`);
    },
    onEpochBegin() {
      epochStart = lastLine = Date.now();
      lossSum = 0;
      seen = 0;
    },
    onBatchEnd(batch, logs, ctx) {
      lossSum += logs.loss * logs.size;
      seen += logs.size;
      const now = Date.now();
      if (now - lastLine < intervalMs) return;
      lastLine = now;
      const total = expectedBatches(ctx);
      const done = batch + 1;
      const eta = (((now - epochStart) / done) * Math.max(total - done, 0)) / 1000;
      write(`  batch ${done}/${total}  loss ${fmt(lossSum / seen)}  ETA ${formatDuration(eta)}`);
    },
    onEpochEnd(_epoch, logs, ctx) {
      write(formatEpochLine(logs, ctx.config.epochs));
    },
    onTrainEnd(ctx) {
      if (ctx.interrupted) write('Training interrupted; the last completed epoch is saved.');
      else if (ctx.stopReason) write(`Stopped: ${ctx.stopReason}`);
    },
  };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** The notebook view: a progress bar for the running epoch and a table of finished epochs. */
export function progressHtml(state: {
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  loss: number;
  eta: number;
  history: readonly EpochLogs[];
  status?: string;
}): string {
  const rows = state.history
    .map(
      (h) =>
        `<tr><td>${h.epoch}</td><td>${fmt(h.loss)}</td><td>${fmt(h.acc)}</td><td>${fmt(h.val_loss)}</td>` +
        `<td>${fmt(h.val_acc)}</td><td>${fmt(h.val_auc)}</td><td>${h.lr.toExponential(2)}</td><td>${h.seconds.toFixed(1)}</td></tr>`,
    )
    .join('');
  const head = '<tr><th>epoch</th><th>loss</th><th>acc</th><th>val_loss</th><th>val_acc</th><th>val_auc</th><th>lr</th><th>s</th></tr>';
  const running = state.status
    ? `<div>${escapeHtml(state.status)}</div>`
    : `<div>Epoch ${state.epoch}/${state.epochs} <progress value="${state.batch}" max="${state.batches}"></progress> ` +
      // Before an epoch's first batch there is no loss or ETA yet: a dash, not "NaN" and "?".
      `${state.batch}/${state.batches} batches, loss ${Number.isFinite(state.loss) ? fmt(state.loss) : '–'}, ETA ${Number.isFinite(state.eta) ? formatDuration(state.eta) : '–'}</div>`;
  return `<div style="font-family:monospace">${running}<table>${head}${rows}</table></div>`;
}

function notebookProgress(display: NotebookDisplay | undefined): Callback {
  // Outside a kernel (forced 'notebook' mode), fall back to printing compact epoch lines.
  if (!display) return lineProgress((l) => console.log(l), 60_000);
  let epoch = 0;
  let epochStart = 0;
  let lastDraw = 0;
  let lossSum = 0;
  let seen = 0;
  const draw = (ctx: TrainContext, batch: number, status?: string) => {
    const batches = expectedBatches(ctx);
    const eta = batch ? (((Date.now() - epochStart) / batch) * Math.max(batches - batch, 0)) / 1000 : NaN;
    display.html(
      progressHtml({
        epoch,
        epochs: ctx.config.epochs,
        batch,
        batches,
        loss: seen ? lossSum / seen : NaN,
        eta,
        history: ctx.history,
        status,
      }),
    );
  };
  return {
    onEpochBegin(e, ctx) {
      epoch = e;
      epochStart = Date.now();
      lossSum = 0;
      seen = 0;
      draw(ctx, 0);
    },
    onBatchEnd(batch, logs, ctx) {
      lossSum += logs.loss * logs.size;
      seen += logs.size;
      // Each update is a kernel message; a few per second is plenty.
      if (Date.now() - lastDraw < 500) return;
      lastDraw = Date.now();
      draw(ctx, batch + 1);
    },
    onEpochEnd(_e, _logs, ctx) {
      draw(ctx, expectedBatches(ctx));
    },
    onTrainEnd(ctx) {
      const status = ctx.interrupted
        ? 'Training interrupted; the last completed epoch is saved.'
        : `Done: ${ctx.history.length} epoch(s)${ctx.stopReason ? ` (${ctx.stopReason})` : ''}`;
      draw(ctx, 0, status);
    },
  };
}
