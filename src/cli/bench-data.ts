/**
 * `npm run bench:data`: how fast the training images load, next to PIL doing the same work in the same run.
 *
 * Measures, on the dataset's train/ images: our cold decode (fresh empty cache: decode + write cache), our warm
 * load (cache hit), and Python PIL's open + convert('L') + resize(BILINEAR) loop (single thread, as Keras'
 * loader does it). Files are read once beforehand so both sides start from the OS page cache.
 * Prints a table and a final JSON line.
 */
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn } from 'child_process';
import { Command } from 'commander';
import { discoverDataset, DatasetError } from '../data/discover';
import { decodeImages, decodeBackend, nativeJpeg, type ResizeFit } from '../data/decode';
import type { ImageRecord } from '../types';

const PIL_SCRIPT = String.raw`
import json, sys, time
from PIL import Image
files_path, size, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = open(files_path).read().splitlines()
start = time.perf_counter()
chunks = []
for f in files:
    with Image.open(f) as im:
        chunks.append(im.convert('L').resize((size, size), Image.BILINEAR).tobytes())
seconds = time.perf_counter() - start
with open(out_path, 'wb') as out:
    out.write(b''.join(chunks))
print(json.dumps({'images': len(files), 'seconds': seconds, 'pil': Image.__version__ if hasattr(Image, '__version__') else ''}))
`;

interface PilResult {
  images: number;
  seconds: number;
  pixels: Uint8Array;
}

async function runPil(python: string, records: ImageRecord[], size: number, workDir: string): Promise<PilResult> {
  const script = path.join(workDir, 'pil_bench.py');
  const list = path.join(workDir, 'files.txt');
  const out = path.join(workDir, 'pil_pixels.bin');
  await fsp.writeFile(script, PIL_SCRIPT);
  await fsp.writeFile(list, records.map((r) => r.path).join('\n'));
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(python, [script, list, String(size), out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    let errText = '';
    child.stdout.on('data', (d) => (text += d));
    child.stderr.on('data', (d) => (errText += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`${python} exited with ${code}: ${errText.trim().split('\n').pop()}`)),
    );
  });
  const parsed = JSON.parse(stdout.trim().split('\n').pop()!) as { images: number; seconds: number };
  return { ...parsed, pixels: new Uint8Array(await fsp.readFile(out)) };
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): { mean: number; max: number } {
  let sum = 0;
  let max = 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = Math.abs(a[i] - b[i]);
    sum += d;
    if (d > max) max = d;
  }
  return { mean: n ? sum / n : NaN, max };
}

async function readAll(records: ImageRecord[]): Promise<void> {
  for (let i = 0; i < records.length; i += 64) {
    await Promise.all(records.slice(i, i + 64).map((r) => fsp.readFile(r.path).catch(() => undefined)));
  }
}

function table(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n');
}

async function main(): Promise<void> {
  const program = new Command()
    .name('bench-data')
    .description('Cold decode and warm cached load of the training images, next to PIL in the same run')
    .option('--data <dir>', 'dataset root (Kaggle layout)', process.env.PNEUMO_DATA ?? path.resolve('../shared/data/chest_xray'))
    .option('--size <n>', 'output side in pixels', (v) => parseInt(v, 10), 150)
    .option('--fit <mode>', 'fill | cover | contain', 'fill')
    .option('--limit <n>', 'use only the first N training images (quick runs)', (v) => parseInt(v, 10))
    .option('--python <exe>', 'Python with PIL for the comparison', '/usr/bin/python3')
    .option('--no-pil', 'skip the PIL comparison')
    .option('--no-native', 'do not use the native libjpeg-turbo fast path (sharp only)')
    .parse();
  const opts = program.opts<{
    data: string;
    size: number;
    fit: ResizeFit;
    limit?: number;
    python: string;
    pil: boolean;
    native: boolean;
  }>();
  const useNative = opts.native && nativeJpeg() !== null;

  const ds = await discoverDataset(opts.data);
  let records = ds.images.filter((r) => r.source === 'train');
  if (opts.limit) records = records.slice(0, opts.limit);
  const workDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bench-data-'));
  try {
    await readAll(records);
    const cacheDir = path.join(workDir, 'cache');

    const coldStart = performance.now();
    const cold = await decodeImages(records, { size: opts.size, fit: opts.fit, cacheDir, native: opts.native });
    const coldSeconds = (performance.now() - coldStart) / 1000;

    const warmStart = performance.now();
    const warm = await decodeImages(records, { size: opts.size, fit: opts.fit, cacheDir, native: opts.native });
    const warmSeconds = (performance.now() - warmStart) / 1000;
    if (!Buffer.from(warm.pixels).equals(Buffer.from(cold.pixels))) throw new Error('warm cache returned different pixels');

    // With the addon in use, also time the portable sharp-only path (what a machine without the addon gets).
    let sharpOnly: number | null = null;
    if (useNative) {
      const start = performance.now();
      await decodeImages(records, { size: opts.size, fit: opts.fit, cacheDir: null, native: false });
      sharpOnly = records.length / ((performance.now() - start) / 1000);
    }

    let pil: PilResult | null = null;
    let pilError = '';
    if (opts.pil) {
      try {
        pil = await runPil(opts.python, records, opts.size, workDir);
      } catch (err) {
        pilError = (err as Error).message;
      }
    }

    const ours = records.length / coldSeconds;
    const pilRate = pil ? pil.images / pil.seconds : null;
    const sameImages = pil && cold.skipped.length === 0 && pil.pixels.length === cold.pixels.length;
    const diff = sameImages ? meanAbsDiff(cold.pixels, pil!.pixels) : null;
    const load = os.loadavg()[0];
    const rows: [string, string][] = [
      ['dataset', `${ds.root} (train/: ${records.length} images, ${cold.skipped.length} skipped)`],
      ['output', `${opts.size}x${opts.size} grayscale, fit ${opts.fit}`],
      ['decoder', decodeBackend(opts.native)],
      ['ours, cold (decode + cache write)', `${coldSeconds.toFixed(2)} s = ${ours.toFixed(0)} img/s (all ${os.cpus().length} cores)`],
      ['ours, warm (cache hit)', `${warmSeconds.toFixed(3)} s`],
      ['ours, sharp only (no addon, no cache)', sharpOnly ? `${sharpOnly.toFixed(0)} img/s` : 'n/a'],
      ['PIL (1 thread)', pil ? `${pil.seconds.toFixed(2)} s = ${pilRate!.toFixed(0)} img/s` : `not run${pilError ? `: ${pilError}` : ''}`],
      ['ours / PIL', pilRate ? `${(ours / pilRate).toFixed(2)}x` : 'n/a'],
      ['pixels vs PIL', diff ? `mean |diff| ${diff.mean.toFixed(2)}, max ${diff.max} (of 255)` : 'n/a'],
      ['load average at end', `${load.toFixed(2)} (other work on the machine slows both sides)`],
    ];
    console.log(`bench:data\n${table(rows)}`);
    console.log(
      JSON.stringify({
        images: records.length,
        size: opts.size,
        decoder: decodeBackend(opts.native),
        ours_img_per_s: Math.round(ours),
        pil_img_per_s: pilRate ? Math.round(pilRate) : null,
        ratio: pilRate ? Number((ours / pilRate).toFixed(3)) : null,
        warm_load_s: Number(warmSeconds.toFixed(3)),
        cold_s: Number(coldSeconds.toFixed(3)),
        sharp_only_img_per_s: sharpOnly ? Math.round(sharpOnly) : null,
        pil_mean_abs_diff: diff ? Number(diff.mean.toFixed(3)) : null,
        cpus: os.cpus().length,
        loadavg_1m: Number(load.toFixed(2)),
      }),
    );
  } finally {
    await fsp.rm(workDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  if (err instanceof DatasetError) {
    console.error(err.message);
  } else {
    console.error(`bench:data failed: ${(err as Error)?.message ?? err}`);
  }
  process.exitCode = 1;
});
