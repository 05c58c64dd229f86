/**
 * `npm run data:get -- [--url URL] [--out DIR] [--from FILE.zip] [--force]`
 * Downloads ChestXRay2017.zip (or imports a Kaggle archive.zip) and extracts it to data/chest_xray.
 */
import type { Command } from 'commander';
import { type CliIo as BaseIo, defaultIo as baseIo, parseCommand, cliProgram, runAsScript } from './common';
import * as cliProgress from 'cli-progress';
import {
  APPROX_ARCHIVE_BYTES,
  DATASET_CITATION,
  DATASET_URL,
  DownloadError,
  formatBytes,
  getDataset,
  type GetDatasetResult,
} from '../data/download';

export interface CliIo extends BaseIo {
  /** Draw progress bars (only sensible on a terminal). */
  progress: boolean;
}

const defaultIo: CliIo = { ...baseIo, progress: Boolean(process.stderr.isTTY) };

interface Flags {
  url: string;
  out: string;
  from?: string;
  force?: boolean;
  sha256?: string;
  expectBytes?: string;
}

function buildProgram(io: CliIo): Command {
  return cliProgram('data:get', io)
    .description(
      'Download the chest X-ray dataset (Kermany et al. 2018, Mendeley Data, CC BY 4.0) and extract it in the ' +
        'Kaggle layout DIR/{train,test}/{NORMAL,PNEUMONIA}.',
    )
    .option('--url <url>', 'archive address (override if Mendeley moves the file)', DATASET_URL)
    .option('--out <dir>', 'destination folder', 'data/chest_xray')
    .option('--from <file.zip>', 'import a zip you downloaded yourself (Kaggle archive.zip or ChestXRay2017.zip)')
    .option('--force', 'replace the destination if it already exists')
    .option('--sha256 <hex>', 'fail unless the archive has this SHA-256')
    .option('--expect-bytes <n>', 'fail unless the download is exactly this many bytes');
}

/** Byte-counting download bar; created on the first report, once we know whether the size is known. */
function downloadProgress(io: CliIo): { update: (received: number, total: number | undefined) => void; stop: () => void } {
  let bar: cliProgress.SingleBar | undefined;
  const started = Date.now();
  const payload = (received: number, total: number | undefined) => ({
    done: formatBytes(received),
    size: total === undefined ? '?' : formatBytes(total),
    speed: `${formatBytes(received / Math.max((Date.now() - started) / 1000, 0.001))}/s`,
  });
  return {
    update(received, total) {
      if (!io.progress) return;
      if (!bar) {
        const format =
          total === undefined
            ? 'Downloading {done} | {speed}'
            : 'Downloading |{bar}| {percentage}% | {done} of {size} | {speed} | ETA {eta_formatted}';
        bar = new cliProgress.SingleBar({ format, etaBuffer: 200, hideCursor: true }, cliProgress.Presets.shades_classic);
        bar.start(total ?? 1, 0, payload(received, total));
      }
      bar.update(total === undefined ? 0 : received, payload(received, total));
    },
    stop: () => bar?.stop(),
  };
}

function extractProgress(io: CliIo): { update: (done: number, total: number) => void; stop: () => void } {
  let bar: cliProgress.SingleBar | undefined;
  return {
    update(done, total) {
      if (!io.progress) return;
      if (!bar) {
        bar = new cliProgress.SingleBar(
          { format: 'Extracting  |{bar}| {percentage}% | {value}/{total} files | ETA {eta_formatted}', hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0);
      }
      bar.update(done);
    },
    stop: () => bar?.stop(),
  };
}

function report(io: CliIo, result: GetDatasetResult): void {
  io.out(`Dataset ready at ${result.root} (from ${result.source}, archive folder "${result.archiveRoot || '/'}")`);
  for (const [key, n] of Object.entries(result.counts)) io.out(`  ${key}: ${n} files`);
  if (result.skippedJunk > 0) io.out(`  left out ${result.skippedJunk} macOS/Windows metadata entries (__MACOSX, .DS_Store)`);
  if (result.skippedOutside > 0) io.out(`  left out ${result.skippedOutside} entries outside the dataset folder (e.g. a duplicate copy)`);
  io.out(`Please cite: ${DATASET_CITATION}`);
}

/** Runs the command; returns the exit code (0 ok, 1 failed, 2 bad usage, 130 interrupted). */
export async function main(argv: string[] = process.argv.slice(2), io: CliIo = defaultIo): Promise<number> {
  const program = buildProgram(io);
  const usageExit = parseCommand(program, argv);
  if (usageExit !== undefined) return usageExit;
  const flags = program.opts<Flags>();
  const expectedBytes = flags.expectBytes === undefined ? undefined : Number(flags.expectBytes);
  if (expectedBytes !== undefined && !(Number.isSafeInteger(expectedBytes) && expectedBytes > 0)) {
    io.err(`--expect-bytes must be a positive whole number, got "${flags.expectBytes}"`);
    return 2;
  }

  const controller = new AbortController();
  const onSigint = () => {
    io.err('\nInterrupted: stopping and removing partial files...');
    controller.abort();
  };
  process.once('SIGINT', onSigint);
  const download = downloadProgress(io);
  const extract = extractProgress(io);
  if (!flags.from && flags.url === DATASET_URL) {
    io.out(`Downloading about ${formatBytes(APPROX_ARCHIVE_BYTES)}; extracting needs about as much again on disk.`);
  }
  try {
    const result = await getDataset({
      out: flags.out,
      url: flags.url,
      from: flags.from,
      force: flags.force,
      sha256: flags.sha256,
      expectedBytes,
      signal: controller.signal,
      onDownloadProgress: (received, total) => download.update(received, total),
      onExtractProgress: (done, total) => {
        download.stop();
        extract.update(done, total);
      },
      log: (line) => {
        download.stop(); // the bar owns the terminal line; finish it before printing
        io.out(line);
      },
    });
    download.stop();
    extract.stop();
    report(io, result);
    return 0;
  } catch (err) {
    download.stop();
    extract.stop();
    if (err instanceof DownloadError) {
      io.err(`data:get: ${err.message}`);
      return err.code === 'ABORTED' ? 130 : 1;
    }
    // File-system errors (no space, no permission) name their path in the message already.
    io.err(`data:get: ${(err as Error)?.message ?? String(err)}`);
    if (process.env.DEBUG) io.err((err as Error)?.stack ?? '');
    return 1;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

runAsScript(module, main);
