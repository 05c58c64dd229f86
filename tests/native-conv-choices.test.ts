/**
 * The `native` backend's timed convolution choices, kept between processes (src/accel/onednn/conv-choices.ts): a
 * choice read back is the one used, without timing; other machines' choices and broken files are left alone; and a
 * second process on the same machine reads what the first wrote. Skipped, visibly, when the addon is not built.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { makeRng } from '../src/random';
import { checkoutCacheFile } from '../src/accel/addons';
import {
  CONV_CHOICES_FILE,
  convChoicesKey,
  loadConvChoices,
  loadNativeAddon,
  saveConvChoices,
  summarizeConvChoices,
  tryRegisterNative,
  type ConvAlgorithmChoice,
  type NativeAddon,
} from '../src/accel/onednn';

const loaded = loadNativeAddon();
const skipWhy = 'why' in loaded ? loaded.why : '';
if (skipWhy) console.warn(`[conv choices tests skipped] ${skipWhy}`);

const X_SHAPE = [1, 9, 10, 16];
/** ConvGeom of a 3x3 'same' 16 -> 16 convolution of X_SHAPE (n h w c oh ow oc kh kw sh sw dh dw pt pl pb pr). */
const GEOMETRY = [1, 9, 10, 16, 9, 10, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1];

function forwardChoice(algorithm: ConvAlgorithmChoice['algorithm']): ConvAlgorithmChoice {
  return { direction: 'forward', geometry: GEOMETRY, algorithm, winogradMs: -1, winograd2x2Ms: 7, winograd4x4Ms: 5, directMs: 9 };
}

/** The convolution's output on native, as the addon's current setting runs it. */
function convolve(): Float32Array {
  const rng = makeRng(5);
  const values = (n: number) => Float32Array.from({ length: n }, () => rng() * 2 - 1);
  return tf.tidy(() => {
    const x = tf.tensor4d(values(9 * 10 * 16), X_SHAPE as [number, number, number, number]);
    const w = tf.tensor4d(values(9 * 256), [3, 3, 16, 16]);
    return tf.conv2d(x, w, 1, 'same').dataSync() as Float32Array;
  });
}

describe.skipIf(Boolean(skipWhy))('convolution choices kept between processes', () => {
  const addon = () => (loaded as { addon: NativeAddon }).addon;
  let dir = '';

  beforeAll(async () => {
    expect(tryRegisterNative()).toMatchObject({ ok: true });
    await tf.setBackend('native');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'conv-choices-'));
  });
  afterAll(() => {
    addon().setConvAlgorithm('auto');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a choice read back is used as if timed here: the output is that algorithm’s, and nothing is timed', () => {
    addon().setConvAlgorithm('winograd4x4');
    const winograd = convolve();
    addon().setConvAlgorithm('direct');
    const direct = convolve();
    expect(Array.from(winograd)).not.toEqual(Array.from(direct)); // the two round differently

    for (const [algorithm, expected] of [
      ['winograd4x4', winograd],
      ['direct', direct],
    ] as const) {
      addon().setConvAlgorithm('auto'); // forgets every choice
      addon().setConvAlgorithmChoices([forwardChoice(algorithm)]);
      expect(Array.from(convolve())).toEqual(Array.from(expected));
      // Still the given times: the choice was taken, not timed again.
      expect(addon().convAlgorithmChoices()).toEqual([forwardChoice(algorithm)]);
    }
    expect(() => addon().setConvAlgorithmChoices([{ ...forwardChoice('direct'), algorithm: 'fastest' as 'direct' }])).toThrow(
      /choice 0 is not \{direction, geometry \(17 integers\), algorithm, times\}/,
    );
  });

  it("saves under this machine's key, reads back only that key's, and treats a broken file as none", () => {
    // By default in the checkout's outputs/cache/ (which git ignores), from any working folder.
    expect(checkoutCacheFile(CONV_CHOICES_FILE)).toBe(path.resolve(__dirname, '..', 'outputs', 'cache', 'native-conv-choices.json'));
    const file = path.join(dir, 'nested', 'choices.json');
    const key = convChoicesKey(addon());
    expect(key).toMatch(/threads; oneDNN [\d.]+; addon .*pneumo_native\.node \(\d+ bytes, modified /);
    addon().setConvAlgorithm('auto');
    addon().setConvAlgorithmChoices([forwardChoice('winograd2x2')]);
    saveConvChoices(addon(), file, key);
    saveConvChoices(addon(), file, 'another machine');
    const written = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(Object.keys(written.machines).sort()).toEqual([key, 'another machine'].sort());

    addon().setConvAlgorithm('auto');
    expect(loadConvChoices(addon(), file, 'a third machine')).toBe(0);
    expect(addon().convAlgorithmChoices()).toEqual([]);
    expect(loadConvChoices(addon(), file, key)).toBe(1);
    expect(addon().convAlgorithmChoices()).toEqual([forwardChoice('winograd2x2')]);

    addon().setConvAlgorithm('auto');
    fs.writeFileSync(file, '{"version": 1, "machines": ');
    expect(loadConvChoices(addon(), file, key)).toBe(0);
    fs.writeFileSync(file, JSON.stringify({ version: 1, machines: { [key]: [{ direction: 'sideways' }] } }));
    expect(loadConvChoices(addon(), file, key)).toBe(0);
    expect(addon().convAlgorithmChoices()).toEqual([]);
  });

  it('a second process on this machine reads what the first timed, and says so', () => {
    const file = path.join(dir, 'two-runs.json');
    const script = [
      "const { initBackend, describeConvChoices } = require('./dist/accel');",
      "const tf = require('@tensorflow/tfjs');",
      "initBackend({ prefer: 'native', quiet: true }).then((info) => {",
      "  tf.tidy(() => tf.conv2d(tf.ones([2, 12, 12, 16]), tf.ones([3, 3, 16, 16]), 1, 'same').dataSync());",
      '  console.log(JSON.stringify({ note: info.note ?? null, choices: describeConvChoices() }));',
      '});',
    ].join('\n');
    const run = () => {
      const out = spawnSync(process.execPath, ['-e', script], {
        cwd: path.resolve(__dirname, '..'),
        env: { ...process.env, PNEUMO_NATIVE_CHOICES: file },
        encoding: 'utf8',
      });
      expect(out.status, out.stderr).toBe(0);
      return JSON.parse(out.stdout.trim().split('\n').pop()!) as { note: string | null; choices: string };
    };
    const first = run();
    expect(first.note).toBeNull();
    expect(first.choices).toMatch(/^forward 2x12x12x16 /);
    expect(fs.existsSync(file)).toBe(true);
    const second = run();
    expect(second.note).toBe(`conv algorithms as timed before on this machine (${path.relative(path.resolve(__dirname, '..'), file)})`);
    expect(second.choices).toBe(first.choices); // the same algorithm, with the times the first run took
  });
});

describe('summarizeConvChoices (the backend line in logs, notebooks and summary.md)', () => {
  const of = (...algorithms: ConvAlgorithmChoice['algorithm'][]) => algorithms.map((a) => forwardChoice(a));

  it('counts the choices per algorithm, the most chosen first', () => {
    expect(summarizeConvChoices(of('winograd4x4', 'winograd4x4', 'winograd4x4'))).toBe('Winograd F(4x4) for all 3 timed');
    expect(summarizeConvChoices(of('direct', 'winograd4x4', 'winograd4x4'))).toBe('Winograd F(4x4) for 2 and direct for 1 of 3 timed');
    expect(summarizeConvChoices(of('winograd', 'direct', 'winograd2x2', 'direct'))).toBe(
      'direct for 2, Winograd for 1 and Winograd F(2x2) for 1 of 4 timed',
    );
  });
});
