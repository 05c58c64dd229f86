/**
 * Sweeps: a grid of runs trained one after another into one sweep folder, with a manifest that records each grid
 * point's state. A killed sweep is continued with `npm start -- --resume SWEEP_DIR`: finished runs are kept, an
 * interrupted run continues from its last completed epoch, the rest are trained. It ends with the comparison table;
 * the pick is by validation only.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { PipelineConfig, PipelineHooks, RunResult } from '../pipeline';
import { RUN_FILES, SWEEP_FILE, createRunDir } from './layout';
import { readJson, writeJsonAtomic } from '../files';
import { acquireRunLock } from './lock';
import { readHistory } from './read';

export { SWEEP_FILE };

export interface SweepAxis {
  /** The `npm start` flag without dashes: lr, augment, batch-size, ... */
  flag: string;
  values: string[];
}

export type SweepPointStatus = 'pending' | 'running' | 'interrupted' | 'done' | 'failed';

export interface SweepPoint {
  /** `lr=1e-3 augment=seed`: the grid coordinates. */
  key: string;
  /** Extra argv for this point, e.g. ['--lr', '1e-3', '--augment', 'seed']. */
  argv: string[];
  status: SweepPointStatus;
  runDir?: string;
  error?: string;
}

export interface SweepManifest {
  format: 'pneumonia-sweep';
  version: 1;
  createdAt: string;
  /** The settings every point starts from (before its own flags). */
  base: PipelineConfig;
  axes: SweepAxis[];
  points: SweepPoint[];
}

/** `lr=1e-3,3e-4` -> { flag: 'lr', values: ['1e-3', '3e-4'] }. */
export function parseSweepAxis(spec: string): SweepAxis {
  const m = /^\s*([a-z][a-z-]*)\s*=\s*(.+)$/.exec(spec);
  if (!m) throw new Error(`--sweep ${spec}: expected FLAG=V1,V2,... (e.g. --sweep lr=1e-3,3e-4 or --sweep augment=default,seed).`);
  const values = m[2]
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean);
  if (values.length < 1) throw new Error(`--sweep ${spec}: give at least one value after '='.`);
  if (new Set(values).size !== values.length) throw new Error(`--sweep ${spec}: a value is repeated.`);
  return { flag: m[1], values };
}

/** Every combination of the axes' values, first axis slowest, as grid points. */
export function sweepGrid(axes: readonly SweepAxis[]): SweepPoint[] {
  const names = axes.map((a) => a.flag);
  if (new Set(names).size !== names.length)
    throw new Error(`--sweep: an axis is given twice (${names.join(', ')}); give each flag once with all its values.`);
  let combos: string[][] = [[]];
  for (const axis of axes) combos = combos.flatMap((c) => axis.values.map((v) => [...c, v]));
  return combos.map((values) => ({
    key: values.map((v, i) => `${axes[i].flag}=${v}`).join(' '),
    argv: values.flatMap((v, i) => [`--${axes[i].flag}`, v]),
    status: 'pending' as const,
  }));
}

export function isSweepDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, SWEEP_FILE));
}

export function readSweep(dir: string): SweepManifest {
  const file = path.join(dir, SWEEP_FILE);
  const m = readJson<SweepManifest>(file);
  if (m?.format !== 'pneumonia-sweep' || m.version !== 1 || !Array.isArray(m.points) || !m.base) {
    throw new Error(`${file} is not a sweep manifest (format pneumonia-sweep v1); start a new sweep with --sweep.`);
  }
  return m;
}

function saveSweep(dir: string, m: SweepManifest): void {
  writeJsonAtomic(path.join(dir, SWEEP_FILE), m);
}

/** A new sweep folder `<out>/<time>-sweep-<flags>/` with its manifest; runs go inside it. */
export function createSweep(base: PipelineConfig, axes: SweepAxis[]): string {
  const points = sweepGrid(axes);
  const dir = createRunDir(base.out, `sweep-${axes.map((a) => a.flag).join('-')}`);
  saveSweep(dir, { format: 'pneumonia-sweep', version: 1, createdAt: new Date().toISOString(), base: { ...base, out: dir }, axes, points });
  return dir;
}

export interface SweepRunner {
  /** The settings of one point: the base with the point's flags applied (validated like the command line). */
  configFor(base: PipelineConfig, point: SweepPoint): PipelineConfig;
  run(cfg: PipelineConfig, hooks: PipelineHooks): Promise<RunResult>;
}

export interface SweepOutcome {
  dir: string;
  manifest: SweepManifest;
  interrupted: boolean;
  /** Run folders of the finished points, in grid order. */
  runDirs: string[];
}

function hasCheckpoint(runDir: string): boolean {
  return fs.existsSync(path.join(runDir, RUN_FILES.latest, 'state.json'));
}

/**
 * Trains the sweep's unfinished points one after another. `hooks.signal` (Ctrl-C in the CLI) stops it after
 * saving the running point's completed epochs; the manifest then says where to pick up.
 */
export async function runSweep(dir: string, runner: SweepRunner, hooks: PipelineHooks = {}): Promise<SweepOutcome> {
  const log = hooks.log ?? console.log;
  // The sweep folder has one driver: a second `--resume` of it while this one runs would train points twice.
  const lock = acquireRunLock(dir);
  if (lock.tookOver) log(lock.tookOver);
  try {
    const m = readSweep(dir);
    const done = m.points.filter((p) => p.status === 'done').length;
    log(
      `Sweep ${dir}: ${m.points.length} run(s) (${m.axes.map((a) => `${a.flag} ${a.values.join('/')}`).join(' x ')}); ${done} already done.`,
    );
    let interrupted = false;
    for (const [i, point] of m.points.entries()) {
      if (point.status === 'done') continue;
      if (hooks.signal?.aborted) {
        interrupted = true;
        break;
      }
      let cfg = runner.configFor(m.base, point);
      if (point.runDir && hasCheckpoint(point.runDir)) {
        log(
          `\n[${i + 1}/${m.points.length}] ${point.key}: continuing ${point.runDir} after ${readHistory(point.runDir).length} completed epoch(s)`,
        );
        cfg = { ...cfg, resume: point.runDir };
      } else {
        if (point.runDir && fs.existsSync(point.runDir)) {
          // Stopped before its first epoch finished: nothing in it is worth keeping, and a fresh start is the same run.
          log(`[${i + 1}/${m.points.length}] ${point.key}: ${point.runDir} has no completed epoch; removing it and starting again`);
          fs.rmSync(point.runDir, { recursive: true, force: true });
        }
        log(`\n[${i + 1}/${m.points.length}] ${point.key}`);
      }
      point.status = 'running';
      point.error = undefined;
      saveSweep(dir, m);
      let result: RunResult;
      try {
        result = await runner.run(cfg, {
          ...hooks,
          onRunDir: (runDir) => {
            point.runDir = runDir;
            saveSweep(dir, m);
            hooks.onRunDir?.(runDir);
          },
        });
      } catch (err) {
        point.status = 'failed';
        point.error = (err as Error).message;
        saveSweep(dir, m);
        throw new Error(`sweep point ${point.key} failed: ${point.error} (continue the sweep with: npm start -- --resume ${dir})`);
      }
      result.model?.dispose();
      point.runDir = result.runDir;
      point.status = result.interrupted ? 'interrupted' : 'done';
      saveSweep(dir, m);
      if (result.interrupted) {
        interrupted = true;
        break;
      }
    }
    const manifest = readSweep(dir);
    if (interrupted) log(`\nSweep interrupted; continue it with: npm start -- --resume ${dir}`);
    return { dir, manifest, interrupted, runDirs: manifest.points.filter((p) => p.status === 'done').map((p) => p.runDir!) };
  } finally {
    lock.release();
  }
}
