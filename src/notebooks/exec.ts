/**
 * Executing a notebook with outside values the papermill way: a copy of the notebook gets an extra cell right after
 * its parameters cell, tagged `injected-parameters`, that overrides the values; the executed copy keeps that cell,
 * so anyone reading it sees what was overridden. The committed notebook is never touched, and a person running the
 * notebook by hand gets exactly what its parameters cell says.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { APT_HINT, jupyterExecutable, KERNEL_NAME } from './jupyter';
import { repoRoot } from '../paths';
import type { Params } from './params';

export class NotebookError extends Error {
  constructor(
    readonly notebook: string,
    message: string,
  ) {
    super(message);
    this.name = 'NotebookError';
  }
}

/** The cell error nbconvert printed, without the Python traceback that leads up to it. */
export function summarizeNbconvertError(stderr: string): string {
  const marker = stderr.indexOf('An error occurred while executing the following cell');
  const text = marker >= 0 ? stderr.slice(marker) : stderr;
  const lines = text.trim().split('\n');
  return lines.slice(0, 60).join('\n');
}

export interface ExecuteOptions {
  outDir: string;
  env?: Record<string, string>;
  /** Per-cell limit, seconds. */
  cellTimeoutS?: number;
  /** 'html' for the report, 'notebook' to keep an executed .ipynb. */
  to?: 'html' | 'notebook';
  /** nbconvert HTML template ('lab', 'classic'); default: the installed nbconvert's default. */
  template?: string | null;
  /** Hide code cells (nbconvert --no-input); prompts are never shown. */
  noInput?: boolean;
}

export interface ExecutedNotebook {
  notebook: string;
  output: string;
  seconds: number;
}

/** Executes one notebook with nbconvert; rejects with the failing cell's error when any cell fails. */
export function executeNotebook(file: string, opts: ExecuteOptions): Promise<ExecutedNotebook> {
  const to = opts.to ?? 'html';
  const base = path.basename(file, '.ipynb');
  fs.mkdirSync(opts.outDir, { recursive: true });
  const args = [
    'nbconvert',
    `--to=${to}`,
    '--execute',
    `--ExecutePreprocessor.kernel_name=${KERNEL_NAME}`,
    `--ExecutePreprocessor.timeout=${opts.cellTimeoutS ?? 1800}`,
    `--output-dir=${opts.outDir}`,
    `--output=${base}`,
    ...(to === 'html' && opts.template ? [`--template=${opts.template}`] : []),
    // `In [3]:` prompts mean nothing to a reader of a report.
    ...(to === 'html' ? [opts.noInput ? '--no-input' : '--no-prompt'] : []),
    file,
  ];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(jupyterExecutable() ?? 'jupyter', args, {
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', () => undefined);
    child.on('error', (err) => reject(new NotebookError(base, `could not start jupyter: ${err.message}\n  ${APT_HINT.nbconvert}`)));
    child.on('close', (code) => {
      const seconds = (Date.now() - started) / 1000;
      if (code !== 0) {
        reject(new NotebookError(base, `${base}.ipynb failed after ${seconds.toFixed(0)} s:\n${summarizeNbconvertError(stderr)}`));
        return;
      }
      resolve({ notebook: file, output: path.join(opts.outDir, `${base}.${to === 'html' ? 'html' : 'ipynb'}`), seconds });
    });
  });
}

export const PARAMETERS_TAG = 'parameters';
export const INJECTED_TAG = 'injected-parameters';

interface Cell {
  cell_type: string;
  source: string | string[];
  metadata?: { tags?: string[]; [k: string]: unknown };
  outputs?: unknown[];
  execution_count?: number | null;
}
export interface NotebookJson {
  cells: Cell[];
  metadata: Record<string, unknown>;
  nbformat: number;
  nbformat_minor: number;
}

const sourceOf = (c: Cell) => (Array.isArray(c.source) ? c.source.join('') : c.source);

/** The parameters cell: the one tagged `parameters`, else the first code cell calling notebookParams(. */
export function parametersCellIndex(nb: NotebookJson, name = 'notebook'): number {
  const tagged = nb.cells.findIndex((c) => c.metadata?.tags?.includes(PARAMETERS_TAG));
  if (tagged >= 0) return tagged;
  const found = nb.cells.findIndex((c) => c.cell_type === 'code' && sourceOf(c).includes('notebookParams('));
  if (found < 0)
    throw new Error(
      `${name} has no parameters cell (a code cell tagged 'parameters' or calling notebookParams()); add one to override its values.`,
    );
  return found;
}

/** The injected cell's TypeScript: one call that overrides `params` in place and prints what it applied. */
export function injectedCellSource(overrides: Params): string {
  const clean = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return [
    '// Injected parameters: values from outside (the report, CI, tests) that override the parameters cell above.',
    "import { applyOverrides as applyInjectedParameters } from '../dist/notebooks/params';",
    `applyInjectedParameters(params, ${JSON.stringify(clean)});`,
  ].join('\n');
}

/** A copy of `nb` with the injected cell after its parameters cell (replacing an earlier injected cell). */
export function injectParameters(nb: NotebookJson, overrides: Params, name = 'notebook'): NotebookJson {
  const cells = nb.cells.filter((c) => !c.metadata?.tags?.includes(INJECTED_TAG));
  const at = parametersCellIndex({ ...nb, cells }, name);
  const injected: Cell = {
    cell_type: 'code',
    source: injectedCellSource(overrides),
    metadata: { tags: [INJECTED_TAG] },
    outputs: [],
    execution_count: null,
  };
  return { ...nb, cells: [...cells.slice(0, at + 1), injected, ...cells.slice(at + 1)] };
}

/** Where the executed copy goes (`<outDir>/<name>.ipynb` or `.html`), and how nbconvert writes it. */
export type ExecuteWithParametersOptions = ExecuteOptions;

/**
 * Executes `file` with `overrides` injected after its parameters cell and writes the executed copy to
 * `outDir/<name>.(ipynb|html)`; rejects with the failing cell's error. The copy to execute is written to a
 * temporary folder directly under the repository root, so the cells' `../dist/...` imports resolve as from notebooks/.
 */
export async function executeWithParameters(
  file: string,
  overrides: Params,
  opts: ExecuteWithParametersOptions,
): Promise<ExecutedNotebook> {
  const name = path.basename(file);
  let nb: NotebookJson;
  try {
    nb = JSON.parse(fs.readFileSync(file, 'utf8')) as NotebookJson;
  } catch (err) {
    throw new Error(`Cannot read notebook ${file}: ${(err as Error).message}`);
  }
  const tmpDir = fs.mkdtempSync(path.join(repoRoot, '.nbinject-'));
  try {
    const copy = path.join(tmpDir, name);
    fs.writeFileSync(copy, JSON.stringify(injectParameters(nb, overrides, name), null, 1));
    const run = await executeNotebook(copy, { ...opts, to: opts.to ?? 'notebook' });
    return { ...run, notebook: file };
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}
