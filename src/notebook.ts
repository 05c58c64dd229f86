/**
 * Notebook parameters: one cell at the top of each notebook declares its defaults, and the same notebook runs
 * on a tiny subset in CI or in full for the report because every value can be overridden from the environment
 * (`PNEUMO_<NAME>`, e.g. `imageSize` <- `PNEUMO_IMAGE_SIZE`).
 */
import * as fs from 'fs';
import * as path from 'path';

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

/**
 * Returns `defaults` with every key overridden by its `PNEUMO_*` environment variable when set.
 * Relative paths in the environment are kept as given: notebooks resolve them against their own folder.
 */
export function notebookParams<T extends Params>(defaults: T, env: NodeJS.ProcessEnv = process.env): Widen<T> {
  const out: Params = { ...defaults };
  for (const [name, fallback] of Object.entries(defaults)) {
    const raw = env[paramEnvName(name)];
    if (raw !== undefined) out[name] = parseParam(name, raw, fallback);
  }
  return out as Widen<T>;
}

/** Renders the parameters as a small text table, with the ones that came from the environment marked. */
export function describeParams(params: Params, env: NodeJS.ProcessEnv = process.env): string {
  const width = Math.max(...Object.keys(params).map((k) => k.length));
  return Object.entries(params)
    .map(([name, value]) => {
      const fromEnv = env[paramEnvName(name)] !== undefined ? `   (from ${paramEnvName(name)})` : '';
      return `${name.padEnd(width)}  ${JSON.stringify(value)}${fromEnv}`;
    })
    .join('\n');
}

/** The repository root, found from this compiled module (dist/notebook.js) so notebooks work from any cwd. */
export const repoRoot = path.resolve(__dirname, '..');

/** Resolves a path parameter against the repository root (not the notebook folder) when it is relative. */
export function repoPath(p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(repoRoot, p);
}

/** Where the notebooks keep what later notebooks reuse (all under the `out` parameter). */
export interface NotebookPaths {
  out: string;
  /** The patient-grouped split written by 02 and read by 03-05. */
  splitFile: string;
  /** Decoded-pixel cache shared by every notebook. */
  cacheDir: string;
  /** The training run (model, history, checkpoints) written by 04 and read by 05. */
  runDir: string;
}

export function notebookPaths(out: string, runDir?: string | null): NotebookPaths {
  const root = repoPath(out);
  return {
    out: root,
    splitFile: path.join(root, 'split.json'),
    cacheDir: path.join(root, 'cache'),
    runDir: runDir ? repoPath(runDir) : path.join(root, 'run'),
  };
}

/** Fails with the missing file and the notebook that makes it, instead of an ENOENT deep inside a loader. */
export function requireOutput(file: string, madeBy: string): string {
  if (!fs.existsSync(file)) {
    throw new Error(`${file} does not exist yet: run ${madeBy} first (with the same PNEUMO_OUT), then re-run this cell.`);
  }
  return file;
}

