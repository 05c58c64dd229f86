/**
 * Executing a notebook with outside values the papermill way: a copy of the notebook gets an extra cell right after
 * its parameters cell, tagged `injected-parameters`, that overrides the values; the executed copy keeps that cell,
 * so anyone reading it sees what was overridden. The committed notebook is never touched, and a person running the
 * notebook by hand gets exactly what its parameters cell says.
 */
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from './jupyter';
import { executeNotebook, type ExecutedNotebook } from './report';
import type { Params } from './notebook';

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
  if (found < 0) throw new Error(`${name} has no parameters cell (a code cell tagged 'parameters' or calling notebookParams()); add one to override its values.`);
  return found;
}

/** The injected cell's TypeScript: one call that overrides `params` in place and prints what it applied. */
export function injectedCellSource(overrides: Params): string {
  const clean = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return [
    '// Injected parameters: values from outside (the report, CI, tests) that override the parameters cell above.',
    "import { applyOverrides as applyInjectedParameters } from '../dist/notebook';",
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

export interface ExecuteWithParametersOptions {
  /** Where the executed copy goes (`<outDir>/<name>.ipynb` or `.html`). */
  outDir: string;
  to?: 'notebook' | 'html';
  cellTimeoutS?: number;
  /** Extra environment for the kernel. */
  env?: Record<string, string>;
}

/**
 * Executes `file` with `overrides` injected after its parameters cell and writes the executed copy to
 * `outDir/<name>.(ipynb|html)`; rejects with the failing cell's error. The copy to execute is written to a
 * temporary folder directly under the repository root, so the cells' `../dist/...` imports resolve as from notebooks/.
 */
export async function executeWithParameters(file: string, overrides: Params, opts: ExecuteWithParametersOptions): Promise<ExecutedNotebook> {
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
    const run = await executeNotebook(copy, { outDir: opts.outDir, env: opts.env, cellTimeoutS: opts.cellTimeoutS, to: opts.to ?? 'notebook' });
    return { ...run, notebook: file };
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}
