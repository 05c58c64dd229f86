#!/usr/bin/env node
/** `npm run report`: execute the notebooks headless and write the offline HTML report to outputs/report/. */
import { formatBytes } from '../format';
import { Command, InvalidArgumentError } from 'commander';
import * as path from 'path';
import { buildReport, DEFAULT_REPORT_DIR, NotebookSettings, screenshotReport } from '../report';
import { NotebookError } from '../notebooks/exec';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got '${value}'`);
  return n;
}

const program = new Command()
  .name('report')
  .description(
    'Executes notebooks/NN-*.ipynb in order with `jupyter nbconvert --execute` (tslab kernel) and writes an offline HTML report.\n' +
      "Flags are injected after each notebook's parameters cell (a cell tagged injected-parameters, shown in the report); unset flags keep the notebook defaults.",
  )
  .option('--data <dir>', 'dataset root (Kaggle layout: train/NORMAL, train/PNEUMONIA, ...)')
  .option('--epochs <n>', 'training epochs (quick report: 1-2)', positiveInt)
  .option('--limit <n>', 'use at most n images per split and class (quick report)', positiveInt)
  .option('--image-size <px>', 'square image size fed to the model', positiveInt)
  .option('--batch-size <n>', 'training batch size', positiveInt)
  .option('--lr <rate>', 'Adam learning rate (04-train)', (v: string) => {
    const n = Number(v);
    if (!(n > 0)) throw new InvalidArgumentError(`expected a number > 0, got '${v}'`);
    return n;
  })
  .option('--augment <spec>', "augmentation spec, e.g. 'seed' or 'none'")
  .option('--model <variant>', "model variant: 'seed' or 'small'")
  .option('--seed <n>', 'random seed', (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a whole number >= 0, got '${v}'`);
    return n;
  })
  .option('--work <dir>', 'where notebooks keep split.json, caches and the run (PNEUMO_OUT)')
  .option('--out <dir>', 'report folder', DEFAULT_REPORT_DIR)
  .option(
    '--only <names...>',
    "re-execute only these notebooks (e.g. '05'), reusing earlier notebooks' saved outputs and the report's other pages",
  )
  .option('--no-input', 'hide the code cells: charts, tables and text only (default: code shown, wrapped)')
  .option('--screenshots [dir]', 'also save a full-page screenshot of each page (headless Chromium)')
  .option('--cell-timeout <s>', 'per-cell time limit in seconds', positiveInt, 3600)
  .action(async (opts) => {
    const settings: NotebookSettings = {
      data: opts.data ? path.resolve(opts.data) : undefined,
      epochs: opts.epochs,
      limit: opts.limit,
      imageSize: opts.imageSize,
      batchSize: opts.batchSize,
      learningRate: opts.lr,
      augment: opts.augment,
      model: opts.model,
      seed: opts.seed,
      out: opts.work ? path.resolve(opts.work) : undefined,
    };
    let heartbeat: NodeJS.Timeout | undefined;
    try {
      const result = await buildReport({
        settings,
        outDir: opts.out,
        only: opts.only,
        cellTimeoutS: opts.cellTimeout,
        // commander sets `input: false` for --no-input and `true` otherwise; undefined keeps --only's earlier choice.
        noInput: opts.input === false ? true : opts.only ? undefined : false,
        onStart: (name, i, total) => {
          console.log(`[${i + 1}/${total}] ${name} ...`);
          // nbconvert prints nothing while a long cell (training) runs: say it is still alive once a minute.
          const started = Date.now();
          heartbeat = setInterval(
            () => console.log(`[${i + 1}/${total}] ${name} still running (${Math.round((Date.now() - started) / 60_000)} min)`),
            60_000,
          );
        },
        onDone: (e, i, total) => {
          clearInterval(heartbeat);
          console.log(`[${i + 1}/${total}] ${e.name} done in ${e.seconds.toFixed(1)} s -> ${e.page}`);
        },
      });
      console.log(
        `Report: ${result.index}  (${result.entries.length} notebooks, ${formatBytes(result.bytes)}, ${result.seconds.toFixed(0)} s; nbconvert template ${result.template ?? 'default'})`,
      );
      if (result.plotly) {
        console.log(
          result.plotly.minified
            ? `plotly.js minified with esbuild: ${formatBytes(result.plotly.sourceBytes)} -> ${formatBytes(result.plotly.bytes)}`
            : `plotly.js left unminified (${formatBytes(result.plotly.bytes)}): esbuild is not installed (it is a dev dependency)`,
        );
      }
      console.log('Open it in a browser; it works offline.');
      if (opts.screenshots) {
        const dir =
          typeof opts.screenshots === 'string'
            ? path.resolve(opts.screenshots)
            : path.join(path.dirname(path.resolve(opts.out)), 'screenshots', 'report');
        for (const shot of await screenshotReport(result, dir)) {
          const problems = [shot.drawn < shot.figures ? `${shot.figures - shot.drawn} chart(s) did not draw` : '', ...shot.errors].filter(
            Boolean,
          );
          console.log(
            `screenshot ${shot.file}: ${shot.drawn}/${shot.figures} charts, ${shot.images} images${problems.length ? ` — ${problems.join('; ')}` : ''}`,
          );
          if (problems.length) process.exitCode = 1;
        }
      }
    } catch (err) {
      clearInterval(heartbeat);
      const e = err as Error;
      console.error(e instanceof NotebookError ? `report: notebook ${e.notebook} failed.\n${e.message}` : `report: ${e.message}`);
      process.exitCode = 1;
    }
  });

program.parseAsync();
