/**
 * The `native` backend's convolution algorithms, kept between processes.
 *
 * Where a Winograd fits, the addon times the algorithms on a convolution's first call and keeps the fastest
 * (accel/onednn/src/conv.cc). Near its 85% margin that choice can differ between two processes on one machine, and
 * so, in their last bits, can two runs with the same seed (session 13: block 1's input gradient took F(4x4) in one
 * run and the direct algorithm in the next, and the runs parted in their first epoch). So the choices are written to
 * a file when a process exits (outputs/cache/native-conv-choices.json in the checkout), under a key naming the machine
 * (processor, ISA caps, threads, oneDNN) and the addon build, and a later process with the same key takes them
 * instead of timing again. PNEUMO_NATIVE_CHOICES names another file, or 'off' for neither reading nor writing (the
 * tests run with it off: their timings, taken with other test files running, must not become a run's choices).
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../../files';
import { checkoutCacheFile } from '../addons';
import { cpuDescription, formatCpu } from '../cpu';
import { type ConvAlgorithmChoice, type NativeAddon, nativeAddonBuild } from './addon';

/** The default file: in the checkout's outputs/cache/, beside the decode cache, from any working folder (a notebook's too). */
export const CONV_CHOICES_FILE = 'native-conv-choices.json';

type ChoicesFile = { version: 1; machines: Record<string, ConvAlgorithmChoice[]> };

/** What makes a timing valid elsewhere: the same processor and ISA caps, threads, oneDNN and addon build. */
export function convChoicesKey(a: NativeAddon): string {
  const cpu = formatCpu(cpuDescription({ nativeVectorLanes: a.vectorLanes() }));
  return `${cpu}; ${a.getThreads()} threads; oneDNN ${a.dnnlVersion()}; addon ${nativeAddonBuild() ?? 'unknown'}`;
}

/** The file's contents; undefined where it is missing or not such a file (said on stderr unless `quiet`). */
function readFile(file: string, quiet = false): ChoicesFile | undefined {
  if (!fs.existsSync(file)) return undefined;
  try {
    const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<ChoicesFile>;
    if (parsed.version === 1 && parsed.machines && typeof parsed.machines === 'object') return parsed as ChoicesFile;
  } catch {
    // reported below
  }
  if (!quiet) {
    process.stderr.write(`warning: ${file} is not a convolution-choices file; timing the convolutions again (it is rewritten at exit)\n`);
  }
  return undefined;
}

/** Gives the addon the choices `file` holds under `key`; returns how many. Unreadable files count as none. */
export function loadConvChoices(a: NativeAddon, file: string, key: string): number {
  const choices = readFile(file)?.machines[key];
  if (!Array.isArray(choices) || choices.length === 0) return 0;
  try {
    a.setConvAlgorithmChoices(choices);
    return choices.length;
  } catch (err) {
    process.stderr.write(`warning: ${file}: ${(err as Error).message}; timing the convolutions again\n`);
    return 0;
  }
}

/** Writes the addon's choices under `key` into `file`, keeping other keys' (atomically: src/files.ts). */
export function saveConvChoices(a: NativeAddon, file: string, key: string): void {
  const choices = a.convAlgorithmChoices();
  if (choices.length === 0) return;
  const contents = readFile(file, true) ?? { version: 1, machines: {} };
  contents.machines[key] = choices;
  writeJsonAtomic(file, contents);
}

let kept = false;

/**
 * Loads the choices for this machine now and saves them when the process exits, unless PNEUMO_NATIVE_CHOICES is 'off'
 * or PNEUMO_NATIVE_WINOGRAD fixes the algorithm (then nothing is timed). Once per process; never throws. Returns the
 * file and how many choices were read from it; undefined where it keeps none.
 */
export function keepConvChoices(a: NativeAddon, env: NodeJS.ProcessEnv = process.env): { file: string; read: number } | undefined {
  const setting = env.PNEUMO_NATIVE_CHOICES;
  if (kept || setting === 'off' || (env.PNEUMO_NATIVE_WINOGRAD ?? '') !== '') return undefined;
  kept = true;
  const file = setting ? path.resolve(setting) : checkoutCacheFile(CONV_CHOICES_FILE);
  if (!file) return undefined;
  const key = convChoicesKey(a);
  const read = loadConvChoices(a, file, key);
  process.on('exit', () => {
    try {
      saveConvChoices(a, file, key);
    } catch (err) {
      process.stderr.write(`warning: could not save the convolution choices to ${file}: ${(err as Error).message}\n`);
    }
  });
  return { file: path.relative(process.cwd(), file) || file, read };
}
