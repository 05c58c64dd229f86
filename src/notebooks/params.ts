/**
 * Notebook parameters: one cell at the top of each notebook declares its values, and the same notebook runs on a
 * tiny subset in CI or in full for the report because values can be overridden from outside: an injected-parameters
 * cell (papermill style) or, on the first execution, `PNEUMO_<NAME>` (e.g. `imageSize` <- `PNEUMO_IMAGE_SIZE`).
 */
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from '../paths';

export type ParamValue = string | number | boolean | null;
export type Params = Record<string, ParamValue>;

/** camelCase parameter name -> environment variable: `imageSize` -> `PNEUMO_IMAGE_SIZE`. */
export function paramEnvName(name: string): string {
  return 'PNEUMO_' + name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/**
 * Parses an environment string into the type of the default, so `epochs` stays a number and `augment` stays
 * whatever its default was. A value that cannot be parsed is an error naming the variable: a typo in CI must not
 * silently run the full dataset.
 */
export function parseParam(name: string, raw: string, fallback: ParamValue): ParamValue {
  const envName = paramEnvName(name);
  if (typeof fallback === 'number') {
    const value = Number(raw.trim());
    if (raw.trim() === '' || !Number.isFinite(value)) {
      throw new Error(`${envName}=${JSON.stringify(raw)} is not a number (parameter '${name}', default ${fallback}).`);
    }
    return value;
  }
  if (typeof fallback === 'boolean') {
    const lower = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(lower)) return true;
    if (['0', 'false', 'no', 'off'].includes(lower)) return false;
    throw new Error(`${envName}=${JSON.stringify(raw)} is not a boolean (use true/false; parameter '${name}').`);
  }
  if (fallback === null) {
    // Null defaults mean "not set" (e.g. no limit); a number-looking value becomes a number.
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.toLowerCase() === 'null') return null;
    const value = Number(trimmed);
    return Number.isFinite(value) ? value : trimmed;
  }
  return raw;
}

type Widen<T> = { [K in keyof T]: T[K] extends number ? number : T[K] extends boolean ? boolean : T[K] extends string ? string : T[K] };

/** Where each value came from, for describeParams: the cell, the environment, or an injected-parameters cell. */
type Provenance = Map<string, { source: 'env' | 'injected' | 'env-ignored'; detail: string }>;
const provenance = new WeakMap<object, Provenance>();
/** Parameter sets (by their names) whose cell already ran once in this kernel. */
const executedCells = new Set<string>();

/**
 * The parameters cell. What the cell says is what runs, with two outside channels, both shown by describeParams:
 * - an injected-parameters cell after it (papermill style; see `executeWithParameters`), which is how the tests and
 *   the report should override values;
 * - `PNEUMO_<NAME>` environment variables, applied on the cell's FIRST execution in a kernel only: once a person
 *   edits the cell and runs it again by hand, their values win (the ignored variables are listed).
 * Passing `env` explicitly applies it every time (tests).
 */
export function notebookParams<T extends Params>(defaults: T, env?: NodeJS.ProcessEnv): Widen<T> {
  const out: Params = { ...defaults };
  const from: Provenance = new Map();
  const key = Object.keys(defaults).sort().join(',');
  const rerun = env === undefined && executedCells.has(key);
  executedCells.add(key);
  const source = env ?? process.env;
  for (const [name, fallback] of Object.entries(defaults)) {
    const envName = paramEnvName(name);
    const raw = source[envName];
    if (raw === undefined) continue;
    if (rerun) {
      from.set(name, {
        source: 'env-ignored',
        detail: `${envName}=${JSON.stringify(raw)} ignored: the cell was re-run by hand, its value wins`,
      });
      continue;
    }
    out[name] = parseParam(name, raw, fallback);
    from.set(name, { source: 'env', detail: `from ${envName}` });
  }
  provenance.set(out, from);
  return out as Widen<T>;
}

/**
 * What an injected-parameters cell calls: overrides `params` in place, keeping each default's type. Overrides the
 * notebook does not declare are listed, not applied (one settings object serves every notebook of a report).
 */
export function applyOverrides(params: Params, overrides: Params, log: (line: string) => void = console.log): void {
  const from = provenance.get(params) ?? new Map();
  const unknown: string[] = [];
  for (const [name, value] of Object.entries(overrides)) {
    if (!(name in params)) {
      unknown.push(name);
      continue;
    }
    const fallback = params[name];
    params[name] =
      value === null || typeof value === typeof fallback || fallback === null ? value : parseParam(name, String(value), fallback);
    from.set(name, { source: 'injected', detail: 'from the injected-parameters cell' });
  }
  provenance.set(params, from);
  const applied = Object.keys(overrides).filter((k) => !unknown.includes(k));
  log(`injected parameters: ${applied.map((k) => `${k}=${JSON.stringify(params[k])}`).join(', ') || 'none'}`);
  if (unknown.length) log(`  not parameters of this notebook (ignored): ${unknown.join(', ')}`);
}

/** Renders the parameters as a small text table, each value marked with where it came from unless the cell. */
export function describeParams(params: Params, env?: NodeJS.ProcessEnv): string {
  const known = env === undefined ? provenance.get(params) : undefined;
  const width = Math.max(...Object.keys(params).map((k) => k.length));
  return Object.entries(params)
    .map(([name, value]) => {
      let note = '';
      if (known) {
        const p = known.get(name);
        if (p) note = `   (${p.detail})`;
      } else if ((env ?? process.env)[paramEnvName(name)] !== undefined) {
        note = `   (from ${paramEnvName(name)})`;
      }
      return `${name.padEnd(width)}  ${JSON.stringify(value)}${note}`;
    })
    .join('\n');
}

/** Resolves a path parameter against the repository root (not the notebook folder) when it is relative. */
export function repoPath(p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(repoRoot, p);
}

/** Where the notebooks keep what later notebooks reuse (all under the `out` parameter). */
export interface NotebookPaths {
  out: string;
  /** The patient-grouped split written by 02 and read by 03-05. */
  splitFile: string;
  /** Decoded-pixel cache shared by every notebook (and by concurrent runs: writes are atomic). */
  cacheDir: string;
  /** Parent of the run folders 04 writes (a new one per training) and 05/06 read. */
  runsDir: string;
  /** A run folder named by the `runDir` parameter (relative to `out`), or undefined for "a new one" / "the newest". */
  runDir?: string;
}

export function notebookPaths(out: string, runDir?: string | null): NotebookPaths {
  const root = repoPath(out);
  return {
    out: root,
    splitFile: path.join(root, 'split.json'),
    cacheDir: path.join(root, 'cache'),
    runsDir: path.join(root, 'runs'),
    runDir: runDir ? path.resolve(root, runDir) : undefined,
  };
}

/** Fails with the missing file and the notebook that makes it, instead of an ENOENT deep inside a loader. */
export function requireOutput(file: string, madeBy: string): string {
  if (!fs.existsSync(file)) {
    throw new Error(`${file} does not exist yet: run ${madeBy} first (with the same PNEUMO_OUT), then re-run this cell.`);
  }
  return file;
}
