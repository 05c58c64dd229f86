/**
 * Gets the real dataset onto disk: downloads the original archive (or imports one the user fetched),
 * checks it is a complete zip with the Kaggle folder layout, and extracts it so that a failed or
 * interrupted run never leaves a half-written dataset or stray temporary files behind.
 */
import { createReadStream, createWriteStream, promises as fs } from 'fs';
import * as path from 'path';
import { tempSibling } from '../files';
import { formatBytes } from '../format';

export { formatBytes };
import { Readable, Transform, type TransformCallback } from 'stream';
import { pipeline } from 'stream/promises';
import type { ReadableStream as NodeReadableStream } from 'stream/web';
import { createHash } from 'crypto';
import * as zlib from 'zlib';
import yauzl from 'yauzl';

/**
 * ChestXRay2017.zip in Kermany, Zhang & Goldbaum (2018), Mendeley Data v2, doi:10.17632/rscbjbr9sj.2 (CC BY 4.0).
 * Mendeley's public-files endpoint redirects to the storage bucket. This address is the one widely used in
 * public scripts; it could not be fetched from the machine this was written on, hence `--url`.
 */
export const DATASET_URL =
  'https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded';
export const DATASET_PAGE_URL = 'https://data.mendeley.com/datasets/rscbjbr9sj/2';
export const KAGGLE_DATASET_URL = 'https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia';
export const DATASET_CITATION =
  'Kermany D, Zhang K, Goldbaum M (2018). Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images ' +
  'for Classification. Mendeley Data, v2. doi:10.17632/rscbjbr9sj.2. License: CC BY 4.0.';
/** About 1.2 GB (size reported by others for ChestXRay2017.zip); only used to tell users how much disk they need. */
export const APPROX_ARCHIVE_BYTES = 1_235_512_464;

const SPLIT_FOLDERS = ['train', 'val', 'test'] as const;
const CLASS_FOLDERS = ['NORMAL', 'PNEUMONIA'] as const;

export type DownloadErrorCode =
  | 'DESTINATION_EXISTS'
  | 'NETWORK'
  | 'HTTP_STATUS'
  | 'INCOMPLETE'
  | 'CHECKSUM'
  | 'NOT_A_ZIP'
  | 'BAD_LAYOUT'
  | 'UNSAFE_PATH'
  | 'NOT_FOUND'
  | 'ABORTED';

/** An error whose message is meant for the user as is: what went wrong, with which file, and what to do. */
export class DownloadError extends Error {
  constructor(
    readonly code: DownloadErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DownloadError';
  }
}

const MANUAL_DOWNLOAD_HINT =
  `Download the archive yourself (Kaggle: ${KAGGLE_DATASET_URL} -> archive.zip, or ` +
  `Mendeley: ${DATASET_PAGE_URL} -> ChestXRay2017.zip) and import it with: npm run data:get -- --from path/to/archive.zip`;

function abortedError(): DownloadError {
  return new DownloadError('ABORTED', 'Interrupted; partial files were removed.');
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError();
}

async function pathExists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

async function removeQuietly(p: string): Promise<void> {
  await fs.rm(p, { recursive: true, force: true }).catch(() => undefined);
}



// ---------------------------------------------------------------------------------------------
// Download

export interface DownloadOptions {
  /** Called as bytes arrive; `total` is undefined when the server does not say. */
  onProgress?: (received: number, total: number | undefined) => void;
  signal?: AbortSignal;
  /** Fail unless exactly this many bytes arrive. */
  expectedBytes?: number;
  /** Fail unless the file has this SHA-256 (hex). */
  sha256?: string;
  /** Give up when no bytes arrive for this long (default 60 s), instead of hanging forever. */
  stallTimeoutMs?: number;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
  /** The address after redirects. */
  finalUrl: string;
}

const NETWORK_CODES = new Set([
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
]);

function errorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: string } })?.cause;
  return cause?.code ?? (err as { code?: string })?.code;
}

function networkError(url: string, err: unknown): DownloadError {
  const code = errorCode(err);
  const host = (() => {
    try {
      return new URL(url).host;
    } catch {
      return url;
    }
  })();
  const why = code && NETWORK_CODES.has(code) ? code : ((err as Error)?.message ?? String(err));
  return new DownloadError(
    'NETWORK',
    `Could not reach ${host} (${why}): the network seems unreachable from this machine ` +
      `(offline, firewall, or a proxy that Node's fetch does not use). ${MANUAL_DOWNLOAD_HINT}`,
  );
}

function parseContentLength(res: Response): number | undefined {
  // A compressed transfer reports the compressed size, which will not match the bytes we count.
  if (res.headers.get('content-encoding')) return undefined;
  const header = res.headers.get('content-length');
  if (header === null) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Counts and hashes bytes on their way to disk. */
class ByteMeter extends Transform {
  received = 0;
  readonly hash = createHash('sha256');
  constructor(private readonly onChunk: (received: number) => void) {
    super();
  }
  _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    this.hash.update(chunk);
    this.onChunk(this.received);
    callback(null, chunk);
  }
}

/**
 * Downloads `url` to `dest`, following redirects. Bytes go to `dest.part` first and are renamed only
 * after the size (and optional checksum) check, so `dest` exists only when complete.
 */
export async function downloadFile(url: string, dest: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const userSignal = opts.signal;
  throwIfAborted(userSignal);
  const stallMs = opts.stallTimeoutMs ?? 60_000;
  // One signal for both ways to stop: the caller's (Ctrl-C) and our stall timer.
  const stall = new AbortController();
  const forwardAbort = () => stall.abort();
  userSignal?.addEventListener('abort', forwardAbort, { once: true });
  const signal = stall.signal;
  let stallTimer: NodeJS.Timeout | undefined;
  const rearmStallTimer = () => {
    clearTimeout(stallTimer);
    stallTimer = setTimeout(() => stall.abort(), stallMs);
  };
  const stalledError = () =>
    new DownloadError(
      'NETWORK',
      `No data from ${url} for ${(stallMs / 1000).toFixed(1)} s; the connection stalled. Nothing was kept. ` +
        `Run the command again later, or ${MANUAL_DOWNLOAD_HINT}`,
    );
  /** The error for an abort: the user's Ctrl-C, or our own stall timer. */
  const abortReason = (): DownloadError | undefined =>
    userSignal?.aborted ? abortedError() : stall.signal.aborted ? stalledError() : undefined;

  const partFile = `${dest}.part`;
  rearmStallTimer();
  try {
    return await fetchToFile(url, dest, partFile, signal, opts, rearmStallTimer, abortReason);
  } finally {
    clearTimeout(stallTimer);
    userSignal?.removeEventListener('abort', forwardAbort);
  }
}

async function fetchToFile(
  url: string,
  dest: string,
  partFile: string,
  signal: AbortSignal,
  opts: DownloadOptions,
  onBytes: () => void,
  abortReason: () => DownloadError | undefined,
): Promise<DownloadResult> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', signal });
  } catch (err) {
    throw abortReason() ?? networkError(url, err);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => undefined);
    throw new DownloadError(
      'HTTP_STATUS',
      `Download failed: ${res.url || url} answered HTTP ${res.status} ${res.statusText}. ` +
        `The address may have changed: check the dataset page ${DATASET_PAGE_URL} and pass --url, ` +
        `or ${MANUAL_DOWNLOAD_HINT}`,
    );
  }
  const contentType = res.headers.get('content-type') ?? '';
  if (/^text\/html/i.test(contentType)) {
    // Typically a login, consent or "file moved" page instead of the archive.
    await res.body.cancel().catch(() => undefined);
    throw new DownloadError(
      'NOT_A_ZIP',
      `${res.url || url} sent a web page (${contentType}), not the zip archive. The download address may have ` +
        `changed: check ${DATASET_PAGE_URL} and pass --url, or ${MANUAL_DOWNLOAD_HINT}`,
    );
  }
  const total = parseContentLength(res);
  const meter = new ByteMeter((received) => {
    onBytes();
    opts.onProgress?.(received, total);
  });
  try {
    await fs.mkdir(path.dirname(dest), { recursive: true });
    opts.onProgress?.(0, total);
    const out = createWriteStream(partFile);
    try {
      const body = Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>);
      await pipeline(body, meter, out, { signal });
    } catch (err) {
      // pipeline rejects as soon as the body fails, while the file may still be opening: removing it before the
      // stream has closed left a .part file behind now and then.
      if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
      const aborted = abortReason();
      if (aborted) throw aborted;
      const got = `${formatBytes(meter.received)}${total === undefined ? '' : ` of ${formatBytes(total)}`}`;
      throw new DownloadError(
        'INCOMPLETE',
        `Download of ${url} broke off after ${got} (${(err as Error).message}). Nothing was kept; run the command again.`,
      );
    }
    const expected = opts.expectedBytes ?? total;
    if (expected !== undefined && meter.received !== expected) {
      throw new DownloadError(
        'INCOMPLETE',
        `Download of ${url} is incomplete: got ${meter.received} bytes, expected ${expected}. ` +
          'Nothing was kept; run the command again.',
      );
    }
    const sha256 = meter.hash.digest('hex');
    if (opts.sha256 && sha256 !== opts.sha256.toLowerCase()) {
      throw new DownloadError(
        'CHECKSUM',
        `Download of ${url} has SHA-256 ${sha256}, expected ${opts.sha256}. Nothing was kept; ` +
          'the file changed on the server or was corrupted on the way.',
      );
    }
    await fs.rename(partFile, dest);
    return { bytes: meter.received, sha256, finalUrl: res.url || url };
  } catch (err) {
    await removeQuietly(partFile);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Zip inspection

/** macOS and Windows metadata that archives pick up; never part of the dataset. */
export function isJunkEntry(name: string): boolean {
  const parts = name.split('/').filter(Boolean);
  const base = parts[parts.length - 1] ?? '';
  return parts.includes('__MACOSX') || base === '.DS_Store' || base.startsWith('._') || base === 'Thumbs.db';
}

/**
 * The folder inside the zip that holds `train/NORMAL` and `train/PNEUMONIA` ('' for the top level,
 * otherwise ending in '/'), or null. Kaggle's archive holds the data twice (chest_xray/ and
 * chest_xray/chest_xray/); the copy with the most files wins, then the shallower one.
 */
export function findDatasetRoot(entryNames: readonly string[]): string | null {
  const byPrefix = new Map<string, { classes: Set<string>; files: number }>();
  for (const name of entryNames) {
    if (name.endsWith('/') || isJunkEntry(name)) continue;
    const match = /^(?:(.*)\/)?(?:train|val|test)\/(NORMAL|PNEUMONIA)\/[^/]+$/.exec(name);
    if (!match) continue;
    const prefix = match[1] === undefined ? '' : `${match[1]}/`;
    const info = byPrefix.get(prefix) ?? { classes: new Set<string>(), files: 0 };
    if (name.slice(prefix.length).startsWith('train/')) info.classes.add(match[2]);
    info.files += 1;
    byPrefix.set(prefix, info);
  }
  const candidates = [...byPrefix.entries()].filter(([, info]) => info.classes.size === CLASS_FOLDERS.length);
  candidates.sort(([pa, a], [pb, b]) => b.files - a.files || pa.length - pb.length);
  return candidates.length > 0 ? candidates[0][0] : null;
}

function openZip(zipFile: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(zipFile, { lazyEntries: true, autoClose: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) {
        reject(
          new DownloadError(
            'NOT_A_ZIP',
            `${zipFile} is not a zip archive, or it is incomplete (${err?.message ?? 'unreadable'}). ` +
              'If it came from a download, delete it and download again.',
          ),
        );
      } else resolve(zip);
    });
  });
}

function unsafePathError(zipFile: string, detail: string): DownloadError {
  return new DownloadError(
    'UNSAFE_PATH',
    `${zipFile} contains an entry that would be written outside the destination (${detail}); ` +
      'refusing to extract it. Use an archive from the official sources.',
  );
}

function readAllEntries(zip: yauzl.ZipFile, zipFile: string): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const entries: yauzl.Entry[] = [];
    zip.on('entry', (entry: yauzl.Entry) => {
      entries.push(entry);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', (err: Error) => {
      // yauzl itself rejects '..' and absolute names while reading the directory.
      if (/invalid relative path|absolute path|invalid characters/.test(err.message)) {
        reject(unsafePathError(zipFile, err.message));
      } else {
        reject(new DownloadError('NOT_A_ZIP', `${zipFile} is damaged (${err.message}). Download it again.`));
      }
    });
    zip.readEntry();
  });
}

function openEntryStream(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Readable> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => (err || !stream ? reject(err ?? new Error('no stream')) : resolve(stream)));
  });
}

/** Verifies the entry's CRC-32 as it streams, so a corrupted archive cannot pass as complete. */
class Crc32Check extends Transform {
  private crc = 0;
  constructor(
    private readonly expected: number,
    private readonly name: string,
  ) {
    super();
  }
  _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.crc = zlib.crc32(chunk, this.crc);
    callback(null, chunk);
  }
  _flush(callback: TransformCallback): void {
    if (this.crc >>> 0 !== this.expected >>> 0) callback(new Error(`CRC-32 mismatch in ${this.name}`));
    else callback();
  }
}

// ---------------------------------------------------------------------------------------------
// Extraction

export interface ExtractOptions {
  /** Replace an existing destination. */
  force?: boolean;
  signal?: AbortSignal;
  onProgress?: (filesDone: number, filesTotal: number) => void;
}

export interface ExtractResult {
  /** Absolute destination folder, holding train/ (and test/, val/ when the archive has them). */
  root: string;
  /** Files per `split/CLASS`, e.g. `train/PNEUMONIA`. */
  counts: Record<string, number>;
  /** The folder inside the zip the dataset came from, e.g. `chest_xray/`. */
  archiveRoot: string;
  /** macOS/Windows metadata entries left out. */
  skippedJunk: number;
  /** Entries outside the dataset's train/val/test folders (e.g. Kaggle's duplicate copy) left out. */
  skippedOutside: number;
}

export async function assertDestinationFree(outDir: string, force = false): Promise<void> {
  if (force || !(await pathExists(outDir))) return;
  const entries = await fs.readdir(outDir).catch(() => ['(not a folder)']);
  if (entries.length === 0) return;
  throw new DownloadError(
    'DESTINATION_EXISTS',
    `${outDir} already exists and is not empty. Use --force to replace it, or --out to choose another folder.`,
  );
}

/** Moves the finished folder into place; with an old one present, it is moved aside first and removed after. */
async function swapIntoPlace(staging: string, target: string): Promise<void> {
  if (await pathExists(target)) {
    const old = tempSibling(target);
    await fs.rename(target, old);
    try {
      await fs.rename(staging, target);
    } catch (err) {
      await fs.rename(old, target).catch(() => undefined);
      throw err;
    }
    await removeQuietly(old);
  } else {
    await fs.rename(staging, target);
  }
}

function countFile(counts: Record<string, number>, relative: string): void {
  const match = /^(train|val|test)\/(NORMAL|PNEUMONIA)\/[^/]+$/.exec(relative);
  if (match) counts[`${match[1]}/${match[2]}`] = (counts[`${match[1]}/${match[2]}`] ?? 0) + 1;
}

/**
 * Extracts the dataset folder of `zipFile` so that `outDir/train/{NORMAL,PNEUMONIA}` holds the images.
 * Everything is written to a temporary sibling folder first and renamed into place at the end.
 */
export async function extractDatasetZip(zipFile: string, outDir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const root = path.resolve(outDir);
  await assertDestinationFree(root, opts.force);
  if (!(await pathExists(zipFile))) {
    throw new DownloadError('NOT_FOUND', `${zipFile} does not exist. Check the path given to --from.`);
  }
  const zip = await openZip(zipFile);
  let staging: string | undefined;
  try {
    const entries = await readAllEntries(zip, zipFile);
    const archiveRoot = findDatasetRoot(entries.map((e) => e.fileName));
    if (archiveRoot === null) {
      const top = [...new Set(entries.map((e) => e.fileName.split('/')[0]).filter((n) => n && !isJunkEntry(n)))];
      throw new DownloadError(
        'BAD_LAYOUT',
        `${zipFile} does not contain the expected dataset folders (chest_xray/train/NORMAL and ` +
          `chest_xray/train/PNEUMONIA); its top level holds: ${top.slice(0, 8).join(', ') || '(nothing)'}. ` +
          `Expected ChestXRay2017.zip from ${DATASET_PAGE_URL} or archive.zip from ${KAGGLE_DATASET_URL}.`,
      );
    }
    // Only the split folders: this leaves out Kaggle's nested duplicate copy and any other extras.
    const wanted = entries.filter(
      (e) =>
        e.fileName.startsWith(archiveRoot) &&
        /^(train|val|test)\//.test(e.fileName.slice(archiveRoot.length)) &&
        !isJunkEntry(e.fileName),
    );
    const skippedJunk = entries.filter((e) => isJunkEntry(e.fileName)).length;
    const skippedOutside = entries.length - skippedJunk - wanted.length;
    const files = wanted.filter((e) => !e.fileName.endsWith('/'));

    await fs.mkdir(path.dirname(root), { recursive: true });
    staging = tempSibling(root);
    await fs.mkdir(staging);
    const counts: Record<string, number> = {};
    let done = 0;
    opts.onProgress?.(0, files.length);
    for (const entry of files) {
      throwIfAborted(opts.signal);
      const relative = entry.fileName.slice(archiveRoot.length);
      const target = path.resolve(staging, relative);
      // Second line of defence after yauzl's own name checks.
      if (!target.startsWith(staging + path.sep)) throw unsafePathError(zipFile, entry.fileName);
      await fs.mkdir(path.dirname(target), { recursive: true });
      try {
        const source = await openEntryStream(zip, entry);
        await pipeline(source, new Crc32Check(entry.crc32, entry.fileName), createWriteStream(target), {
          signal: opts.signal,
        });
      } catch (err) {
        if (opts.signal?.aborted) throw abortedError();
        throw new DownloadError(
          'NOT_A_ZIP',
          `${zipFile} is damaged: ${entry.fileName} could not be extracted (${(err as Error).message}). Download it again.`,
        );
      }
      countFile(counts, relative);
      done += 1;
      opts.onProgress?.(done, files.length);
    }
    for (const cls of CLASS_FOLDERS) counts[`train/${cls}`] ??= 0;
    throwIfAborted(opts.signal);
    if (opts.force) await swapIntoPlace(staging, root);
    else {
      // Someone may have created the destination while we extracted; never merge into it.
      await assertDestinationFree(root);
      await swapIntoPlace(staging, root);
    }
    staging = undefined;
    return { root, counts: orderedCounts(counts), archiveRoot, skippedJunk, skippedOutside };
  } finally {
    zip.close();
    if (staging) await removeQuietly(staging);
  }
}

function orderedCounts(counts: Record<string, number>): Record<string, number> {
  const ordered: Record<string, number> = {};
  for (const split of SPLIT_FOLDERS) {
    for (const cls of CLASS_FOLDERS) {
      const key = `${split}/${cls}`;
      if (counts[key] !== undefined) ordered[key] = counts[key];
    }
  }
  return ordered;
}

// ---------------------------------------------------------------------------------------------
// Download or import, then extract

export interface GetDatasetOptions {
  /** Destination folder (the CLI's default is data/chest_xray). */
  out: string;
  /** Archive address; defaults to DATASET_URL. Ignored with `from`. */
  url?: string;
  /** A zip already on disk (Kaggle archive.zip or Mendeley ChestXRay2017.zip); nothing is downloaded. */
  from?: string;
  force?: boolean;
  expectedBytes?: number;
  sha256?: string;
  signal?: AbortSignal;
  onDownloadProgress?: DownloadOptions['onProgress'];
  onExtractProgress?: ExtractOptions['onProgress'];
  /** Status lines for the user. */
  log?: (message: string) => void;
}

export interface GetDatasetResult extends ExtractResult {
  /** The URL or file the data came from. */
  source: string;
  download?: DownloadResult;
}

export async function getDataset(opts: GetDatasetOptions): Promise<GetDatasetResult> {
  const root = path.resolve(opts.out);
  const log = opts.log ?? (() => undefined);
  // Checked before a 1.2 GB download rather than after it.
  await assertDestinationFree(root, opts.force);
  await fs.mkdir(path.dirname(root), { recursive: true });
  const stale = await removeStaleTemps(root);
  if (stale.length > 0) log(`Removed ${stale.length} leftover temporary item(s) of an earlier, killed run: ${stale.join(', ')}`);
  if (opts.from) {
    const from = path.resolve(opts.from);
    const stat = await fs.stat(from).catch(() => null);
    if (!stat?.isFile()) {
      throw new DownloadError('NOT_FOUND', `${from} does not exist or is not a file. Check the path given to --from.`);
    }
    if (opts.sha256) await assertSha256(from, opts.sha256, opts.signal);
    log(`Importing ${from} (${formatBytes(stat.size)})`);
    const result = await extractDatasetZip(from, root, { force: opts.force, signal: opts.signal, onProgress: opts.onExtractProgress });
    return { ...result, source: from };
  }
  const url = opts.url ?? DATASET_URL;
  const zipFile = `${tempSibling(root)}.zip`;
  try {
    log(`Downloading ${url}`);
    const download = await downloadFile(url, zipFile, {
      signal: opts.signal,
      expectedBytes: opts.expectedBytes,
      sha256: opts.sha256,
      onProgress: opts.onDownloadProgress,
    });
    log(`Downloaded ${formatBytes(download.bytes)} (sha256 ${download.sha256}); extracting`);
    const result = await extractDatasetZip(zipFile, root, {
      force: opts.force,
      signal: opts.signal,
      onProgress: opts.onExtractProgress,
    }).catch((err: unknown) => {
      // The temporary file name means nothing to the user; the URL does.
      if (err instanceof DownloadError && (err.code === 'NOT_A_ZIP' || err.code === 'BAD_LAYOUT' || err.code === 'UNSAFE_PATH')) {
        throw new DownloadError(err.code, `${err.message.split(zipFile).join(`the file downloaded from ${url}`)}`);
      }
      throw err;
    });
    return { ...result, source: url, download };
  } finally {
    await removeQuietly(zipFile);
    await removeQuietly(`${zipFile}.part`);
  }
}

/**
 * Temporary siblings (download, extract, old) left by a run that was killed outright, recognised by
 * the process id in their name no longer running. Ctrl-C cleans up by itself; this covers kill -9.
 */
export async function removeStaleTemps(target: string): Promise<string[]> {
  const dir = path.dirname(target);
  const escaped = path.basename(target).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^\\.${escaped}\\.(?:download|extract|old)-(\\d+)-`);
  const removed: string[] = [];
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    const match = pattern.exec(name);
    if (!match || isProcessAlive(Number(match[1]))) continue;
    await removeQuietly(path.join(dir, name));
    removed.push(name);
  }
  return removed;
}

function isProcessAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function assertSha256(file: string, expected: string, signal?: AbortSignal): Promise<void> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) {
    throwIfAborted(signal);
    hash.update(chunk as Buffer);
  }
  const actual = hash.digest('hex');
  if (actual !== expected.toLowerCase()) {
    throw new DownloadError('CHECKSUM', `${file} has SHA-256 ${actual}, expected ${expected}. Is it the right archive?`);
  }
}
