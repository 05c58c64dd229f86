import { spawn } from 'child_process';
import { promises as fs } from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import yazl from 'yazl';
import { compiledCli } from './compiled-cli';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DownloadError,
  KAGGLE_DATASET_URL,
  downloadFile,
  extractDatasetZip,
  findDatasetRoot,
  getDataset,
  isJunkEntry,
} from '../src/data/download';
import { main as dataGetMain } from '../src/cli/data-get';

/** Tiny real JPEGs, so extracted files can be compared byte for byte. */
let jpegA: Buffer;
let jpegB: Buffer;

const DATASET_FILES = [
  'train/NORMAL/IM-0001-0001.jpeg',
  'train/NORMAL/NORMAL2-IM-0002-0001.jpeg',
  'train/PNEUMONIA/person1_bacteria_1.jpeg',
  'train/PNEUMONIA/person2_virus_3.jpeg',
  'test/NORMAL/IM-0003-0001.jpeg',
  'test/PNEUMONIA/person3_bacteria_7.jpeg',
];

function zipBuffer(entries: Array<[string, Buffer]>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, data] of entries) zip.addBuffer(data, name);
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

function datasetEntries(prefix: string): Array<[string, Buffer]> {
  return DATASET_FILES.map((f, i) => [`${prefix}${f}`, i % 2 === 0 ? jpegA : jpegB]);
}

/** Mendeley-like: chest_xray/... plus macOS junk. */
let mendeleyZip: Buffer;
/** Kaggle-like: the data twice, chest_xray/ and chest_xray/chest_xray/, plus junk. */
let kaggleZip: Buffer;
let wrongLayoutZip: Buffer;
let slipZip: Buffer;
let corruptZip: Buffer;

const SLIP_PLACEHOLDER = 'chest_xray/train/NORMAL/AA/AA/AA/AA/AA/AA/AA/AA/slipped-out.jpeg';

/** yazl refuses '..' in names, as it should; an attacker would not, so patch the bytes afterwards. */
async function makeSlipZip(): Promise<Buffer> {
  const buf = await zipBuffer([...datasetEntries('chest_xray/'), [SLIP_PLACEHOLDER, jpegA]]);
  const text = buf.toString('latin1');
  const patchedName = SLIP_PLACEHOLDER.replace(/AA\//g, '../');
  return Buffer.from(text.split(SLIP_PLACEHOLDER).join(patchedName), 'latin1');
}

/** Flips one byte inside a stored file's data: the directory is intact, the CRC is not. */
async function makeCorruptZip(): Promise<Buffer> {
  const marker = Buffer.alloc(4000, 0x41);
  const buf = await zipBuffer([...datasetEntries('chest_xray/'), ['chest_xray/train/NORMAL/big.jpeg', marker]]);
  // yazl deflates by default; a long run of 'A' compresses, so corrupt the stored deflate stream of that entry.
  const at = buf.indexOf(Buffer.from('chest_xray/train/NORMAL/big.jpeg')) + 'chest_xray/train/NORMAL/big.jpeg'.length + 2;
  const copy = Buffer.from(buf);
  copy[at] ^= 0xff;
  return copy;
}

let server: http.Server;
let baseUrl: string;
const slowResponses: http.ServerResponse[] = [];

function serve(req: http.IncomingMessage, res: http.ServerResponse): void {
  const send = (status: number, body: Buffer, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-length': String(body.length), ...headers });
    res.end(body);
  };
  switch (req.url) {
    case '/ChestXRay2017.zip':
      return send(200, mendeleyZip, { 'content-type': 'application/zip' });
    case '/chunked.zip':
      res.writeHead(200, { 'content-type': 'application/zip' });
      res.write(mendeleyZip.subarray(0, 100));
      res.end(mendeleyZip.subarray(100));
      return;
    case '/redirect':
      res.writeHead(302, { location: '/ChestXRay2017.zip' });
      return void res.end();
    case '/redirect-twice':
      res.writeHead(301, { location: `${baseUrl}/redirect` });
      return void res.end();
    case '/truncated': {
      // Promises the whole archive, sends half, then hangs up.
      res.writeHead(200, { 'content-length': String(mendeleyZip.length) });
      res.write(mendeleyZip.subarray(0, Math.floor(mendeleyZip.length / 2)), () => res.socket?.destroy());
      return;
    }
    case '/slow':
      res.writeHead(200, { 'content-length': String(mendeleyZip.length) });
      res.write(mendeleyZip.subarray(0, 64));
      slowResponses.push(res);
      return;
    case '/login-page':
      return send(200, Buffer.from('<html><body>Please log in</body></html>'), { 'content-type': 'text/html; charset=utf-8' });
    case '/notzip':
      return send(200, Buffer.from('this is not a zip archive at all'), { 'content-type': 'application/octet-stream' });
    case '/wrong-layout.zip':
      return send(200, wrongLayoutZip);
    case '/slip.zip':
      return send(200, slipZip);
    case '/corrupt.zip':
      return send(200, corruptZip);
    default:
      return send(404, Buffer.from('not found'));
  }
}

let workDir: string;
/** The folder that holds the destination: after a failure it must be exactly as before. */
let parent: string;
let dest: string;

beforeAll(async () => {
  jpegA = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#404040' } })
    .jpeg()
    .toBuffer();
  jpegB = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c0c0c0' } })
    .jpeg()
    .toBuffer();
  const junk: Array<[string, Buffer]> = [
    ['__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg', Buffer.from('mac resource fork')],
    ['chest_xray/train/.DS_Store', Buffer.from('finder')],
  ];
  mendeleyZip = await zipBuffer([...datasetEntries('chest_xray/'), ...junk]);
  kaggleZip = await zipBuffer([...datasetEntries('chest_xray/'), ...datasetEntries('chest_xray/chest_xray/'), ...junk]);
  wrongLayoutZip = await zipBuffer([
    ['images/a.jpeg', jpegA],
    ['images/b.jpeg', jpegB],
  ]);
  slipZip = await makeSlipZip();
  corruptZip = await makeCorruptZip();
  server = http.createServer(serve);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'data-download-test-'));
});

afterAll(async () => {
  for (const res of slowResponses) res.destroy();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await fs.rm(workDir, { recursive: true, force: true });
});

beforeEach(async () => {
  parent = await fs.mkdtemp(path.join(workDir, 'case-'));
  dest = path.join(parent, 'chest_xray');
});

async function expectDownloadError(promise: Promise<unknown>, code: string): Promise<DownloadError> {
  const err = await promise.then(
    () => {
      throw new Error(`expected a DownloadError ${code}, but it succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DownloadError);
  expect((err as DownloadError).code).toBe(code);
  return err as DownloadError;
}

/** Everything under `dir`, relative, sorted. */
async function listTree(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true });
  return entries.map((e) => e.split(path.sep).join('/')).sort();
}

async function expectDatasetAt(root: string): Promise<void> {
  const files = (await listTree(root)).filter((f) => f.endsWith('.jpeg'));
  expect(files).toEqual([...DATASET_FILES].sort());
  expect(await fs.readFile(path.join(root, DATASET_FILES[0]))).toEqual(jpegA);
  expect(await fs.readFile(path.join(root, DATASET_FILES[1]))).toEqual(jpegB);
}

describe('findDatasetRoot / isJunkEntry', () => {
  const files = (prefix: string) => DATASET_FILES.map((f) => prefix + f);

  it('finds the dataset folder at the top, nested, or under ChestXRay2017/', () => {
    expect(findDatasetRoot(DATASET_FILES)).toBe('');
    expect(findDatasetRoot(files('chest_xray/'))).toBe('chest_xray/');
    expect(findDatasetRoot(files('ChestXRay2017/chest_xray/'))).toBe('ChestXRay2017/chest_xray/');
  });

  it("prefers the shallower of Kaggle's two identical copies, and the fuller one when they differ", () => {
    expect(findDatasetRoot([...files('chest_xray/chest_xray/'), ...files('chest_xray/')])).toBe('chest_xray/');
    expect(findDatasetRoot([...files('chest_xray/chest_xray/'), ...files('chest_xray/').slice(0, 4)])).toBe('chest_xray/chest_xray/');
  });

  it('ignores __MACOSX copies and needs both classes under train/', () => {
    expect(findDatasetRoot(files('__MACOSX/chest_xray/'))).toBeNull();
    expect(findDatasetRoot(['chest_xray/train/NORMAL/a.jpeg', 'chest_xray/test/PNEUMONIA/b.jpeg'])).toBeNull();
  });

  it('recognises macOS and Windows metadata', () => {
    expect(isJunkEntry('__MACOSX/chest_xray/train/NORMAL/._a.jpeg')).toBe(true);
    expect(isJunkEntry('chest_xray/train/.DS_Store')).toBe(true);
    expect(isJunkEntry('chest_xray/train/NORMAL/._a.jpeg')).toBe(true);
    expect(isJunkEntry('chest_xray/train/NORMAL/a.jpeg')).toBe(false);
  });
});

describe('getDataset over HTTP', () => {
  it('downloads, verifies and extracts into place, leaving junk and temp files out', async () => {
    const progress: Array<[number, number | undefined]> = [];
    const result = await getDataset({
      out: dest,
      url: `${baseUrl}/ChestXRay2017.zip`,
      onDownloadProgress: (received, total) => progress.push([received, total]),
    });
    expect(result.root).toBe(dest);
    expect(result.archiveRoot).toBe('chest_xray/');
    expect(result.counts).toEqual({ 'train/NORMAL': 2, 'train/PNEUMONIA': 2, 'test/NORMAL': 1, 'test/PNEUMONIA': 1 });
    expect(result.skippedJunk).toBe(2);
    expect(result.download?.bytes).toBe(mendeleyZip.length);
    expect(progress.at(-1)).toEqual([mendeleyZip.length, mendeleyZip.length]);
    await expectDatasetAt(dest);
    expect((await listTree(dest)).some((f) => f.includes('__MACOSX') || f.endsWith('.DS_Store'))).toBe(false);
    expect(await fs.readdir(parent)).toEqual(['chest_xray']);
  });

  it('follows redirects (301 then 302)', async () => {
    const result = await getDataset({ out: dest, url: `${baseUrl}/redirect-twice` });
    expect(result.download?.finalUrl).toBe(`${baseUrl}/ChestXRay2017.zip`);
    await expectDatasetAt(dest);
  });

  it('works without a content-length (chunked transfer)', async () => {
    const result = await getDataset({ out: dest, url: `${baseUrl}/chunked.zip` });
    expect(result.download?.bytes).toBe(mendeleyZip.length);
    await expectDatasetAt(dest);
  });

  it('reports an HTTP 404 clearly and leaves nothing behind', async () => {
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/gone.zip` }), 'HTTP_STATUS');
    expect(err.message).toMatch(/HTTP 404/);
    expect(err.message).toContain('--url');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('rejects a response cut short of its content-length and leaves nothing behind', async () => {
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/truncated` }), 'INCOMPLETE');
    expect(err.message).toMatch(/broke off|incomplete/);
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('rejects a download of the wrong size or checksum', async () => {
    const url = `${baseUrl}/ChestXRay2017.zip`;
    await expectDownloadError(getDataset({ out: dest, url, expectedBytes: mendeleyZip.length + 1 }), 'INCOMPLETE');
    await expectDownloadError(getDataset({ out: dest, url, sha256: '0'.repeat(64) }), 'CHECKSUM');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('rejects a web page served instead of the archive, pointing to --url and --from', async () => {
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/login-page` }), 'NOT_A_ZIP');
    expect(err.message).toMatch(/web page \(text\/html/);
    expect(err.message).toContain('--url');
    expect(err.message).toContain('--from');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('rejects a download that is not a zip, naming the URL rather than a temporary file', async () => {
    const url = `${baseUrl}/notzip`;
    const err = await expectDownloadError(getDataset({ out: dest, url }), 'NOT_A_ZIP');
    expect(err.message).toMatch(/not a zip archive/);
    expect(err.message).toContain(`downloaded from ${url}`);
    expect(err.message).not.toContain('.download-');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('removes temporary files left by a killed run, but not those of a running one', async () => {
    const deadPid = 4_194_305; // above Linux's largest pid, so never running
    const dead = [`.chest_xray.download-${deadPid}-a-b.zip.part`, `.chest_xray.extract-${deadPid}-a-b`];
    const alive = `.chest_xray.extract-${process.ppid}-a-b`;
    await fs.writeFile(path.join(parent, dead[0]), 'partial');
    await fs.mkdir(path.join(parent, dead[1]));
    await fs.mkdir(path.join(parent, alive));
    const log: string[] = [];
    await getDataset({ out: dest, url: `${baseUrl}/ChestXRay2017.zip`, log: (l) => log.push(l) });
    expect((await fs.readdir(parent)).sort()).toEqual([alive, 'chest_xray'].sort());
    expect(log.join('\n')).toContain('Removed 2 leftover temporary item(s)');
  });

  it('rejects a zip without the expected folders, saying what it expected', async () => {
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/wrong-layout.zip` }), 'BAD_LAYOUT');
    expect(err.message).toContain('chest_xray/train/NORMAL');
    expect(err.message).toContain('images');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('rejects a zip-slip entry and writes nothing anywhere', async () => {
    await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/slip.zip` }), 'UNSAFE_PATH');
    expect(await fs.readdir(parent)).toEqual([]);
    const escaped = await listTree(workDir);
    expect(escaped.some((f) => f.endsWith('slipped-out.jpeg'))).toBe(false);
  });

  it('rejects an archive whose data fails its CRC and leaves nothing behind', async () => {
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/corrupt.zip` }), 'NOT_A_ZIP');
    expect(err.message).toMatch(/damaged/);
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('says the network is unreachable and points to --from and Kaggle', async () => {
    // A port nobody listens on: connection refused, as when offline.
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const err = await expectDownloadError(getDataset({ out: dest, url: `http://127.0.0.1:${port}/x.zip` }), 'NETWORK');
    expect(err.message).toContain('ECONNREFUSED');
    expect(err.message).toContain('--from');
    expect(err.message).toContain(KAGGLE_DATASET_URL);
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('stops on abort mid-download and removes the partial file', async () => {
    const controller = new AbortController();
    const promise = getDataset({
      out: dest,
      url: `${baseUrl}/slow`,
      signal: controller.signal,
      onDownloadProgress: (received) => {
        if (received > 0) controller.abort();
      },
    });
    await expectDownloadError(promise, 'ABORTED');
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('gives up on a stalled connection instead of hanging, and leaves nothing behind', async () => {
    const started = Date.now();
    const err = await expectDownloadError(downloadFile(`${baseUrl}/slow`, path.join(parent, 'x.zip'), { stallTimeoutMs: 300 }), 'NETWORK');
    expect(err.message).toMatch(/stalled/);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await fs.readdir(parent)).toEqual([]);
  });

  it('refuses an existing destination unless forced', async () => {
    await fs.mkdir(dest);
    await fs.writeFile(path.join(dest, 'mine.txt'), 'keep me');
    const err = await expectDownloadError(getDataset({ out: dest, url: `${baseUrl}/ChestXRay2017.zip` }), 'DESTINATION_EXISTS');
    expect(err.message).toContain('--force');
    expect(await fs.readFile(path.join(dest, 'mine.txt'), 'utf8')).toBe('keep me');

    await getDataset({ out: dest, url: `${baseUrl}/ChestXRay2017.zip`, force: true });
    await expectDatasetAt(dest);
    expect(await pathExists(path.join(dest, 'mine.txt'))).toBe(false);
    expect(await fs.readdir(parent)).toEqual(['chest_xray']);
  });
});

async function pathExists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

describe('downloadFile', () => {
  it('writes the file only when complete', async () => {
    const target = path.join(parent, 'a.zip');
    const result = await downloadFile(`${baseUrl}/redirect`, target);
    expect(result.bytes).toBe(mendeleyZip.length);
    expect(await fs.readFile(target)).toEqual(mendeleyZip);
    await expectDownloadError(downloadFile(`${baseUrl}/truncated`, path.join(parent, 'b.zip')), 'INCOMPLETE');
    expect(await fs.readdir(parent)).toEqual(['a.zip']);
  });
});

describe('import with --from', () => {
  it('imports a Kaggle archive.zip (data twice, plus junk) through the CLI', async () => {
    const zipFile = path.join(parent, 'archive.zip');
    await fs.writeFile(zipFile, kaggleZip);
    const out: string[] = [];
    const err: string[] = [];
    const code = await dataGetMain(['--from', zipFile, '--out', dest], {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      progress: false,
    });
    expect(err).toEqual([]);
    expect(code).toBe(0);
    await expectDatasetAt(dest);
    expect(out.join('\n')).toMatch(/train\/PNEUMONIA: 2 files/);
    expect(out.join('\n')).toMatch(/left out 6 entries outside the dataset folder/);
    expect((await fs.readdir(parent)).sort()).toEqual(['archive.zip', 'chest_xray']);
  });

  it('extractDatasetZip reports a missing file and a non-zip file by name', async () => {
    const missing = path.join(parent, 'nope.zip');
    const err = await expectDownloadError(extractDatasetZip(missing, dest), 'NOT_FOUND');
    expect(err.message).toContain(missing);
    const text = path.join(parent, 'text.zip');
    await fs.writeFile(text, 'hello');
    expect((await expectDownloadError(extractDatasetZip(text, dest), 'NOT_A_ZIP')).message).toContain(text);
    expect(await fs.readdir(parent)).toEqual(['text.zip']);
  });

  it('CLI refuses an existing destination without --force, with exit code 1 and a hint', async () => {
    const zipFile = path.join(parent, 'archive.zip');
    await fs.writeFile(zipFile, kaggleZip);
    await fs.mkdir(dest);
    await fs.writeFile(path.join(dest, 'mine.txt'), 'keep me');
    const err: string[] = [];
    const io = { out: () => undefined, err: (l: string) => err.push(l), progress: false };
    expect(await dataGetMain(['--from', zipFile, '--out', dest], io)).toBe(1);
    expect(err.join('\n')).toMatch(/already exists.*--force/);
    expect(await fs.readFile(path.join(dest, 'mine.txt'), 'utf8')).toBe('keep me');
    expect(await dataGetMain(['--from', zipFile, '--out', dest, '--force'], io)).toBe(0);
    await expectDatasetAt(dest);
  });

  it('CLI rejects a bad flag value with exit code 2', async () => {
    const err: string[] = [];
    const code = await dataGetMain(['--expect-bytes', 'lots', '--out', dest], {
      out: () => undefined,
      err: (l) => err.push(l),
      progress: false,
    });
    expect(code).toBe(2);
    expect(err.join('\n')).toContain('--expect-bytes');
  });
});

const repoRoot = path.resolve(__dirname, '..');

describe('data:get as a program', () => {
  it('on Ctrl-C (SIGINT) mid-download removes its partial files and exits with 130', async () => {
    const program = await compiledCli('data-get', ['src/cli/data-get.ts', 'src/cli/common.ts', 'src/data/download.ts'], workDir);
    const child = spawn(process.execPath, [program, '--url', `${baseUrl}/slow`, '--out', dest], {
      cwd: repoRoot,
      env: { ...process.env, NODE_PATH: path.join(repoRoot, 'node_modules') },
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Wait until the partial download exists, then interrupt.
    for (let i = 0; i < 200 && !(await fs.readdir(parent)).some((f) => f.endsWith('.part')); i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    expect((await fs.readdir(parent)).some((f) => f.endsWith('.part'))).toBe(true);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toContain('Interrupted');
    expect(await fs.readdir(parent)).toEqual([]);
  });
});
