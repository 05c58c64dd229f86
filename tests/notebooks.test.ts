import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { buildReport, listNotebooks } from '../src/report';
import { registerKernel, tslabBinary } from '../src/notebooks/jupyter';
import { executeWithParameters, INJECTED_TAG, PARAMETERS_TAG, type NotebookJson } from '../src/notebooks/exec';
import { listRuns, readRun } from '../src/runs/read';
import { readMetrics } from '../src/runs/metrics-file';
import { loadSplit } from '../src/data/split';
import { generateDemoDataset } from '../src/data/demo';
import { main as predictMain } from '../src/cli/predict';
import { demoReport, jupyterRequired, jupyterUnavailable, repoRoot, tinySettings } from './report-fixture';

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
  it('are the numbered series 00-06', () => {
    expect(notebooks.map((f) => path.basename(f))).toEqual([
      '00-smoke.ipynb',
      '01-explore.ipynb',
      '02-split-and-augment.ipynb',
      '03-model.ipynb',
      '04-train.ipynb',
      '05-evaluate.ipynb',
      '06-compare-runs.ipynb',
    ]);
  });

  it.each(notebooks.map((f) => [path.basename(f), f]))('%s carries no outputs and uses the tslab kernel', (_, file) => {
    const nb = read(file);
    expect(nb.metadata.kernelspec?.name).toBe('tslab');
    const dirty = nb.cells
      .map((c, i) => ({ i, c }))
      .filter(({ c }) => c.cell_type === 'code' && ((c.outputs?.length ?? 0) > 0 || (c.execution_count ?? null) !== null));
    // Commit notebooks cleared (Cell > All Output > Clear): outputs hold 10 MB of plotly.js and machine-specific paths.
    expect(
      dirty.map(({ i }) => `cell ${i}`),
      `${path.basename(file)} has outputs; clear them before committing`,
    ).toEqual([]);
  });

  it.each(notebooks.map((f) => [path.basename(f), f]))('%s has one parameters cell first, and imports src through ../dist', (_, file) => {
    const code = read(file)
      .cells.filter((c) => c.cell_type === 'code')
      .map(source);
    expect(code[0]).toContain('notebookParams(');
    expect(code.slice(1).some((s) => s.includes('notebookParams('))).toBe(false);
    expect(code.join('\n')).not.toMatch(/from '\.\.\/src\//);
    // Tagged for papermill-style injection; nothing computed from params there, or an injected value would miss it.
    const first = read(file).cells.find((c) => c.cell_type === 'code') as Cell & { metadata?: { tags?: string[] } };
    expect(first.metadata?.tags).toContain('parameters');
    expect(
      code[0]
        .split('\n')
        .filter((l) => /^(const|let) /.test(l))
        .map((l) => l.split(/[ =]/)[1]),
    ).toEqual(['params']);
  });

  it.each(notebooks.map((f) => [path.basename(f), f]))('%s keeps its logic in src/: no code cell over 15 lines', (_, file) => {
    const long = read(file)
      .cells.map((c, i) => ({ i, lines: c.cell_type === 'code' ? source(c).split('\n').length : 0 }))
      .filter((c) => c.lines > 15);
    expect(long.map((c) => `cell ${c.i}: ${c.lines} lines`)).toEqual([]);
  });

  // A loop or a figure written out in a cell is logic the next notebook (or a test) cannot reuse: src/ lacks a function.
  it.each(notebooks.map((f) => [path.basename(f), f]))('%s has no loops and no inline figures in its code cells', (_, file) => {
    const logic = read(file)
      .cells.map((c, i) => ({ i, code: c.cell_type === 'code' ? source(c) : '' }))
      .filter(({ code }) => /\b(for|while) \(|showFigure\(\{/.test(code));
    expect(logic.map((c) => `cell ${c.i}`)).toEqual([]);
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
      // 04 trained one run (a new folder) and 05 evaluated it, in the schema the CLI reads.
      const { runs } = listRuns(path.join(report.workDir, 'runs'));
      expect(runs.map((r) => r.status)).toEqual(['evaluated']);
      expect(readMetrics(path.join(runs[0].dir, 'metrics.json')).writtenBy).toBe('05-evaluate');
      expect(fs.readdirSync(path.join(report.workDir, 'cache')).length).toBeGreaterThan(0);
      // The index links every notebook page; pages share one plotly.js.
      const index = fs.readFileSync(report.index, 'utf8');
      for (const e of report.entries) expect(index).toContain(`href="${e.page}"`);
      expect(index).toMatch(/<th>CPU<\/th><td>[^<]+, (AVX-512|AVX2|SSE|unknown)/); // from the run's config.json
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

const outputText = (cell: { outputs?: Array<{ text?: string | string[]; data?: Record<string, unknown> }> }): string =>
  (cell.outputs ?? [])
    .map((o) => [o.text ?? '', o.data?.['text/plain'] ?? ''].map((t) => (Array.isArray(t) ? t.join('') : String(t))).join(''))
    .join('');

describe('executing the notebooks with injected parameters (executeWithParameters)', () => {
  let tmp: string;
  let overrides: Record<string, string | number>;
  const executed = (name: string) => JSON.parse(fs.readFileSync(path.join(tmp, 'executed', `${name}.ipynb`), 'utf8')) as NotebookJson;

  it.skipIf(skip)(
    `02, 04, 05 and 06 write files the CLI's readers accept; the executed copies show the injected cell${skip ? ` — SKIPPED: ${unavailable}` : ''}`,
    async () => {
      if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-nb-inject-'));
      const data = path.join(tmp, 'data');
      await generateDemoDataset({ outDir: data, perClass: 12, testPerClass: 4, size: 64, seed: 3 });
      overrides = { ...tinySettings(data, path.join(tmp, 'work')) } as Record<string, string | number>;
      for (const name of ['02-split-and-augment', '04-train', '05-evaluate', '06-compare-runs']) {
        await executeWithParameters(path.join(repoRoot, 'notebooks', `${name}.ipynb`), overrides, {
          outDir: path.join(tmp, 'executed'),
          cellTimeoutS: 300,
        });
      }
      // The injected cell sits right after the parameters cell and says what it applied and what it ignored.
      const nb = executed('04-train');
      const at = nb.cells.findIndex((c) => c.metadata?.tags?.includes(PARAMETERS_TAG));
      expect(nb.cells[at + 1].metadata?.tags).toEqual([INJECTED_TAG]);
      expect(outputText(nb.cells[at + 1] as never)).toMatch(/injected parameters: .*epochs=1.*imageSize=32/);
      expect(outputText(nb.cells[at + 1] as never)).toMatch(/not parameters of this notebook \(ignored\): data$/m);
      expect(outputText(nb.cells[at + 1] as never)).not.toMatch(/imageSize: 32/); // no stray echo of the params object
      expect(fs.readdirSync(repoRoot).filter((n) => n.startsWith('.nbinject-'))).toEqual([]);

      // What each notebook wrote, read back with the readers the CLI uses.
      const work = path.join(tmp, 'work');
      expect((await loadSplit(path.join(work, 'split.json'))).root).toBe(data);
      const { runs, problems } = listRuns(path.join(work, 'runs'));
      expect(problems).toEqual([]);
      expect(runs.length).toBe(1);
      const run = readRun(runs[0].dir);
      expect(run.config.train).toMatchObject({ epochs: 1, batchSize: 16, seed: 7 });
      expect(run.config.variant).toBe('small');
      expect(run.name).toMatch(/^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-small-32px-e1-b16-aug-seed-seed7$/);
      const metrics = readMetrics(path.join(run.dir, 'metrics.json'));
      expect(metrics).toMatchObject({
        writtenBy: '05-evaluate',
        imageSize: 32,
        epochsRun: 1,
        // The notebook asks for recall=0.98; a handful of validation positives cannot judge it (src/metrics.ts).
        thresholdRule: { kind: 'youden' },
      });
      expect(metrics.thresholdNote).toMatch(/^recall=0.98 needs at least 50 validation positives/);
      expect(outputText(executed('05-evaluate').cells[5] as never)).toMatch(new RegExp(`run: ${run.name} \\(the newest of 1 trained run`));

      // predict on the notebook's run: the threshold and rule come from its metrics.json (was "rule ?").
      const lines: string[] = [];
      const image = path.join(data, 'test', 'NORMAL', fs.readdirSync(path.join(data, 'test', 'NORMAL'))[0]);
      const code = await predictMain(['--model', run.dir, image], { out: (l) => lines.push(l), err: (l) => lines.push(l) });
      expect(lines.join('\n')).toMatch(
        new RegExp(`threshold ${metrics.threshold.toFixed(4)} from .*metrics.json \\(rule youden, chosen on validation\\)`),
      );
      expect(code).toBe(0);

      expect(outputText(executed('06-compare-runs').cells[5] as never)).toMatch(new RegExp(`best by validation: ${run.name}`));
    },
    10 * 60_000,
  );
});

describe('re-running cells in one kernel (04-train: parameters cell + training cell, five times)', () => {
  it.skipIf(skip)(
    `each re-run is a new run with the typed learning rate; tensors return to the same count; the previous model is disposed${skip ? ` — SKIPPED: ${unavailable}` : ''}`,
    async () => {
      if (unavailable) throw new Error(`PNEUMO_REQUIRE_JUPYTER=1 but ${unavailable}`);
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pneumo-nb-rerun-'));
      const data = path.join(tmp, 'data');
      const work = path.join(tmp, 'work');
      await generateDemoDataset({ outDir: data, perClass: 12, testPerClass: 4, size: 64, seed: 3 });
      const settings = tinySettings(data, work) as Record<string, string | number>;
      await executeWithParameters(path.join(repoRoot, 'notebooks', '02-split-and-augment.ipynb'), settings, {
        outDir: path.join(tmp, 'executed'),
        cellTimeoutS: 300,
      });

      // 04 as a person would use it: run it once, then edit the parameters cell (another learning rate) and re-run
      // it and the training cell, five times. The cells are 04's own, so this measures the committed code.
      const nb = JSON.parse(fs.readFileSync(path.join(repoRoot, 'notebooks', '04-train.ipynb'), 'utf8')) as NotebookJson;
      const code = nb.cells.filter((c) => c.cell_type === 'code').map((c) => (Array.isArray(c.source) ? c.source.join('') : c.source));
      const [paramsCell, dataCell, trainCell] = code;
      const rates = [3e-3, 1e-3, 3e-4, 1e-4, 3e-5];
      const edited = (lr: number) =>
        paramsCell
          .replace(/imageSize: \d+/, 'imageSize: 32')
          .replace(/model: '\w+'/, "model: 'small'")
          .replace(/epochs: \d+/, 'epochs: 1')
          .replace(/batchSize: \d+/, 'batchSize: 16')
          .replace(/learningRate: [\d.e-]+/, `learningRate: ${lr}`)
          .replace(/out: '[^']*'/, `out: ${JSON.stringify(work)}`);
      const measure = [
        'const weight = trained.model.getWeights()[0];',
        'const previous = (globalThis as any).__previousWeight;',
        '(globalThis as any).__previousWeight = weight;',
        "console.log('MEASURE ' + JSON.stringify({ lr: params.learningRate, runDir: trained.runDir, numTensors: tf.memory().numTensors, rssMB: Math.round(process.memoryUsage().rss / 1e6), previousDisposed: previous ? previous.isDisposed : null }));",
        'console.log(describeParams(params));',
      ].join('\n');
      const cell = (source: string) => ({ cell_type: 'code', source, metadata: {}, outputs: [], execution_count: null });
      nb.cells = [
        { ...cell(paramsCell), metadata: { tags: ['parameters'] } },
        cell(dataCell),
        ...rates.flatMap((lr) => [cell(edited(lr)), cell(trainCell), cell(measure)]),
        // The same trainings from one cell: what the kernel's RSS does without tslab compiling new cells.
        cell(
          `for (const lr of ${JSON.stringify(rates)}) {\n  params.learningRate = lr;\n  await trainInNotebook(split, decoded, notebookTrainConfig(params, split, paths), paths, { log: () => undefined });\n  console.log('LOOP ' + JSON.stringify({ lr, numTensors: tf.memory().numTensors, rssMB: Math.round(process.memoryUsage().rss / 1e6) }));\n}`,
        ),
      ];
      const file = path.join(tmp, '04-train-rerun.ipynb');
      fs.writeFileSync(file, JSON.stringify(nb));
      // A PNEUMO_ variable set for the kernel must not override what the person typed on a re-run.
      const run = await executeWithParameters(file, settings, {
        outDir: path.join(tmp, 'executed'),
        cellTimeoutS: 300,
        env: { PNEUMO_LEARNING_RATE: '0.5' },
      });
      const executed = JSON.parse(fs.readFileSync(run.output, 'utf8')) as NotebookJson;
      const text = executed.cells.map((c) => outputText(c as never)).join('\n');
      const rows = [...text.matchAll(/MEASURE (\{.*\})/g)].map(
        (m) => JSON.parse(m[1]) as { lr: number; runDir: string; numTensors: number; rssMB: number; previousDisposed: boolean | null },
      );
      console.log(`re-runs (lr, tensors, RSS MB): ${rows.map((r) => `${r.lr}: ${r.numTensors} / ${r.rssMB}`).join('; ')}`);
      expect(rows.map((r) => r.lr)).toEqual(rates);
      expect(text).toMatch(/learningRate\s+0\.0003\s+\(PNEUMO_LEARNING_RATE="0\.5" ignored: the cell was re-run by hand, its value wins\)/);
      expect(new Set(rows.map((r) => r.runDir)).size).toBe(5);
      expect(rows.map((r) => readRun(r.runDir).config.train.learningRate)).toEqual(rates);
      expect(rows.map((r) => r.previousDisposed)).toEqual([null, true, true, true, true]);
      expect(new Set(rows.map((r) => r.numTensors)).size).toBe(1);
      // Each re-executed cell costs tslab ~10 MB to compile (measured with import-only cells), so RSS across cell
      // re-runs rises by that much; the trainings themselves, looped in one cell, must leave RSS flat.
      const loop = [...text.matchAll(/LOOP (\{.*\})/g)].map((m) => JSON.parse(m[1]) as { numTensors: number; rssMB: number });
      console.log(`same trainings looped in one cell (tensors, RSS MB): ${loop.map((r) => `${r.numTensors} / ${r.rssMB}`).join('; ')}`);
      expect(loop.length).toBe(5);
      expect(new Set(loop.map((r) => r.numTensors))).toEqual(new Set([rows[0].numTensors]));
      expect(loop[4].rssMB - loop[0].rssMB).toBeLessThan(30);
      expect(rows[4].rssMB - rows[1].rssMB).toBeLessThan(150);
      fs.rmSync(tmp, { recursive: true, force: true });
    },
    10 * 60_000,
  );
});
