import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { buildReport, listNotebooks } from '../src/report';
import { registerKernel, tslabBinary } from '../src/jupyter';
import { demoReport, jupyterRequired, jupyterUnavailable } from './report-fixture';

interface Cell {
  cell_type: string;
  source: string[] | string;
  outputs?: unknown[];
  execution_count?: number | null;
}
interface Notebook {
  cells: Cell[];
  metadata: { kernelspec?: { name: string } };
}

const notebooks = listNotebooks();
const read = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as Notebook;
const source = (c: Cell) => (Array.isArray(c.source) ? c.source.join('') : c.source);

describe('committed notebooks', () => {
  it('are the numbered series 00-05', () => {
    expect(notebooks.map((f) => path.basename(f))).toEqual([
      '00-smoke.ipynb',
      '01-explore.ipynb',
      '02-split-and-augment.ipynb',
      '03-model.ipynb',
      '04-train.ipynb',
      '05-evaluate.ipynb',
    ]);
  });

  it.each(notebooks.map((f) => [path.basename(f), f]))('%s carries no outputs and uses the tslab kernel', (_, file) => {
    const nb = read(file);
    expect(nb.metadata.kernelspec?.name).toBe('tslab');
    const dirty = nb.cells
      .map((c, i) => ({ i, c }))
      .filter(({ c }) => c.cell_type === 'code' && ((c.outputs?.length ?? 0) > 0 || (c.execution_count ?? null) !== null));
    // Commit notebooks cleared (Cell > All Output > Clear): outputs hold 10 MB of plotly.js and machine-specific paths.
    expect(dirty.map(({ i }) => `cell ${i}`), `${path.basename(file)} has outputs; clear them before committing`).toEqual([]);
  });

  it.each(notebooks.map((f) => [path.basename(f), f]))('%s has one parameters cell first, and imports src through ../dist', (_, file) => {
    const code = read(file).cells.filter((c) => c.cell_type === 'code').map(source);
    expect(code[0]).toContain('notebookParams(');
    expect(code.slice(1).some((s) => s.includes('notebookParams('))).toBe(false);
    expect(code.join('\n')).not.toMatch(/from '\.\.\/src\//);
  });
});

const unavailable = jupyterUnavailable();
const skip = unavailable !== null && !jupyterRequired();

describe('executing the notebooks (nbconvert, tslab kernel, tiny demo data)', () => {
  it.skipIf(skip)(`the tslab kernel is registered for this checkout, idempotently${skip ? ` — SKIPPED: ${unavailable}` : ''}`, () => {
    registerKernel(); // registers if needed (a fresh machine)
    const again = registerKernel();
    expect(again.status).toBe('already-registered');
    expect(again.spec.argv[0]).toBe(tslabBinary());
  });

  it.skipIf(skip)(
    `every notebook runs without a cell error${skip ? ` — SKIPPED: ${unavailable}` : ''}`,
    async () => {
      if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
      const report = await demoReport();
      expect(report.entries.map((e) => e.name)).toEqual(notebooks.map((f) => path.basename(f, '.ipynb')));
      // Later notebooks reuse what earlier ones saved, in the shared work folder.
      expect(fs.existsSync(path.join(report.workDir, 'split.json'))).toBe(true);
      expect(fs.existsSync(path.join(report.workDir, 'run', 'model', 'model.json'))).toBe(true);
      expect(fs.existsSync(path.join(report.workDir, 'run', 'metrics.json'))).toBe(true);
      expect(fs.readdirSync(path.join(report.workDir, 'cache')).length).toBeGreaterThan(0);
      // The index links every notebook page; pages share one plotly.js.
      const index = fs.readFileSync(report.index, 'utf8');
      for (const e of report.entries) expect(index).toContain(`href="${e.page}"`);
      expect(fs.statSync(path.join(report.outDir, 'plotly.js')).size).toBeGreaterThan(1_000_000);
      console.log(`notebooks executed: ${report.log.join(', ')}`);
    },
    15 * 60_000,
  );

  it.skipIf(skip)(
    `report --only 05 re-executes one notebook on the saved run and keeps the other pages${skip ? ` — SKIPPED: ${unavailable}` : ''}`,
    async () => {
      const report = await demoReport();
      // A copy, so the other test files keep reading the original report.
      const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'report-only-'));
      fs.cpSync(report.outDir, copy, { recursive: true });
      const before = fs.statSync(path.join(copy, '04-train.html')).mtimeMs;
      const again = await buildReport({ settings: {}, outDir: copy, only: ['05'] });
      expect(again.entries.map((e) => e.name)).toEqual(report.entries.map((e) => e.name));
      expect(fs.statSync(path.join(copy, '04-train.html')).mtimeMs).toBe(before);
      const page = fs.readFileSync(path.join(copy, '05-evaluate.html'), 'utf8');
      expect(page).toContain(report.workDir); // the manifest's work folder was passed on
      expect(page).toContain('src="plotly.js"');
      fs.rmSync(copy, { recursive: true, force: true });
    },
    5 * 60_000,
  );
});
