import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { describe, expect, it } from 'vitest';
import {
  chooseTemplate,
  decoratePage,
  dropExternalRefs,
  dropLocalScriptRefs,
  externalizePlotly,
  externalizeStyles,
  minifyJs,
  listNotebooks,
  notebookEnv,
  notebookTitle,
  selectNotebooks,
} from '../src/report';
import { summarizeNbconvertError } from '../src/notebooks/exec';
import { PLOTLY_SCRIPT_ID } from '../src/viz/display';
import { describeRule, readRunSummary, summaryHtml, type RunSummary } from '../src/report/summary';
import { shebangPython } from '../src/notebooks/jupyter';

describe('report assembly', () => {
  it('moves the inlined plotly.js into a shared file reference', () => {
    const page = `<p>a</p><script id="${PLOTLY_SCRIPT_ID}" type="text/javascript">BUNDLE();</script><div id="f"></div><script>draw()</script>`;
    const { html, bundle } = externalizePlotly(page);
    expect(bundle).toBe('BUNDLE();');
    expect(html).toBe(`<p>a</p><script id="${PLOTLY_SCRIPT_ID}" src="plotly.js"></script><div id="f"></div><script>draw()</script>`);
    expect(externalizePlotly('<p>no charts</p>')).toEqual({ html: '<p>no charts</p>' });
  });

  it('drops scripts that only exist on the exporting machine', () => {
    const html = '<script src="file:///usr/share/javascript/requirejs/require.min.js"></script><script src="plotly.js"></script>';
    expect(dropLocalScriptRefs(html)).toBe('<script src="plotly.js"></script>');
  });

  it('drops every CDN load nbconvert 7 templates add, and keeps the local ones', () => {
    const html = [
      '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.1.10/require.min.js"></script>',
      '<script type="text/javascript" src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"> </script>',
      '<link rel="stylesheet" href="//fonts.example/x.css">',
      '<script type="module">\n  document.addEventListener("DOMContentLoaded", async () => {\n    const m = (await import("https://cdnjs.cloudflare.com/ajax/libs/mermaid/11.10.0/mermaid.esm.min.mjs")).default;\n  });\n</script>',
      '<script>var keep = 1;</script>',
      '<script id="pneumo-plotly-bundle" src="plotly.js"></script>',
      '<link rel="stylesheet" href="style.css">',
      '<a href="https://www.kaggle.com/">a link is not a load</a>',
    ].join('\n');
    const out = dropExternalRefs(html);
    expect(out).not.toMatch(/cdnjs|fonts\.example/);
    expect(out).toContain('<script>var keep = 1;</script>');
    expect(out).toContain('<script id="pneumo-plotly-bundle" src="plotly.js"></script>');
    expect(out).toContain('<link rel="stylesheet" href="style.css">');
    expect(out).toContain('<a href="https://www.kaggle.com/">');
  });

  it('shares large inline styles as one file per content, keeping small and our own ones inline', () => {
    const theme = `.jp-Cell{color:red}${' '.repeat(9000)}`;
    const page = (extra: string) =>
      `<head><style type="text/css">${theme}</style><style>.small{}</style><style id="pneumo-report-style">${' '.repeat(9000)}</style>${extra}</head>`;
    const a = externalizeStyles(page('a'));
    const b = externalizeStyles(page('b'));
    expect(a.sheets).toHaveLength(1);
    expect(a.sheets[0].css).toBe(theme);
    expect(b.sheets[0].file).toBe(a.sheets[0].file);
    expect(a.html).toContain(`<link rel="stylesheet" href="${a.sheets[0].file}">`);
    expect(a.html).toContain('<style>.small{}</style>');
    expect(a.html).toContain('<style id="pneumo-report-style">');
    expect(a.html).not.toContain('.jp-Cell{color:red}');
  });

  it("prefers nbconvert's lab template, then classic", () => {
    expect(chooseTemplate(['basic', 'classic', 'lab'])).toBe('lab');
    expect(chooseTemplate(['classic', 'basic'])).toBe('classic');
    expect(chooseTemplate(['basic'])).toBeNull();
  });

  it('adds the wrapping style and a navigation bar to a page', () => {
    const page = decoratePage('<html><head><title>t</title></head><body class="jp-Notebook"><p>x</p></body></html>', {
      index: 'index.html',
      prev: { page: '03-model.html', title: 'The <model>' },
      next: { page: '05-evaluate.html', title: 'Evaluate' },
    });
    expect(page).toMatch(/<style id="pneumo-report-style">[\s\S]*white-space: pre-wrap[\s\S]*<\/style>\n<\/head>/);
    expect(page).toContain(
      '<body class="jp-Notebook"><nav class="pneumo-nav"><a href="index.html">Report summary</a><a href="03-model.html">← The &lt;model&gt;</a><a href="05-evaluate.html">→ Evaluate</a></nav><p>x</p>',
    );
  });

  it('minifies JavaScript with esbuild, keeping what it does', async () => {
    const source = 'function add(first, second) {\n  // a comment\n  return first + second;\n}\nglobalThis.result = add(2, 3);\n';
    const min = await minifyJs(source);
    expect(min).not.toBeNull();
    expect(min!.length).toBeLessThan(source.length);
    expect(min).not.toContain('a comment');
    const g = {} as { result?: number };
    new Function('globalThis', min!)(g);
    expect(g.result).toBe(5);
  });

  it('passes report flags to the notebooks as PNEUMO_* variables, skipping unset ones', () => {
    expect(notebookEnv({ data: '/d', epochs: 1, imageSize: 32, limit: undefined })).toEqual({
      PNEUMO_DATA: '/d',
      PNEUMO_EPOCHS: '1',
      PNEUMO_IMAGE_SIZE: '32',
    });
  });

  it('lists numbered notebooks in order and reads their titles', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nb-list-'));
    const nb = (title: string) => JSON.stringify({ cells: [{ cell_type: 'markdown', source: ['intro\n', `# ${title}\n`] }] });
    fs.writeFileSync(path.join(dir, '10-b.ipynb'), nb('B'));
    fs.writeFileSync(path.join(dir, '02-a.ipynb'), nb('A title'));
    fs.writeFileSync(path.join(dir, 'scratch.ipynb'), nb('x'));
    const list = listNotebooks(dir);
    expect(list.map((f) => path.basename(f))).toEqual(['02-a.ipynb', '10-b.ipynb']);
    expect(notebookTitle(list[0])).toBe('A title');
  });

  it('--only picks notebooks by name prefix and names the ones that do not exist', () => {
    const all = ['/n/00-smoke.ipynb', '/n/04-train.ipynb', '/n/05-evaluate.ipynb'];
    expect(selectNotebooks(all, ['05'])).toEqual(['/n/05-evaluate.ipynb']);
    expect(selectNotebooks(all, ['04-train', '05'])).toEqual(['/n/04-train.ipynb', '/n/05-evaluate.ipynb']);
    expect(() => selectNotebooks(all, ['07'])).toThrow(/No notebook matches '07'; notebooks: 00-smoke, 04-train, 05-evaluate/);
  });

  it('keeps the failing cell from nbconvert stderr', () => {
    const stderr =
      'Traceback (most recent call last):\n  File x\nAn error occurred while executing the following cell:\n------\nthrow 1\n------\nError: boom';
    const text = summarizeNbconvertError(stderr);
    expect(text.startsWith('An error occurred')).toBe(true);
    expect(text).toContain('Error: boom');
  });

  it('reads the python of a jupyter launcher script', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shebang-'));
    const script = path.join(dir, 'jupyter');
    fs.writeFileSync(script, '#!/usr/bin/python3\nimport x\n');
    expect(shebangPython(script)).toBe('/usr/bin/python3');
    fs.writeFileSync(script, '#!/bin/sh\n');
    expect(shebangPython(script)).toBeNull();
  });
});

describe('the summary page', () => {
  const pages = [
    { name: '02-a', title: 'A <title>', page: '02-a.html', seconds: 3 },
    { name: '06-compare-runs', title: 'Compare runs', page: '06-compare-runs.html', seconds: 4 },
  ];
  const metrics = (accuracy: number) => ({
    accuracy,
    precision: 0.9,
    recall: 0.98,
    specificity: 0.8,
    f1: 0.94,
    auc: 0.975,
    averagePrecision: 0.97,
    count: 100,
    confusion: { tp: 60, fp: 5, tn: 30, fn: 5 },
    roc: { fpr: [], tpr: [], thresholds: [] },
    pr: { precision: [], recall: [], thresholds: [] },
  });
  const run: RunSummary = {
    runDir: '/r/run',
    metrics: { threshold: 0.4321, rule: 'recall=0.98', val: metrics(0.91) as never, test: metrics(0.87) as never },
    app: '/r/run/app/index.html',
    problems: [],
  };

  it('shows the headline metrics with the threshold rule, links every page, and files a compare notebook under runs comparison', () => {
    const html = summaryHtml({ pages, run, outDir: '/r/report', generatedAt: new Date(0), settings: { epochs: 1 } });
    expect(html).toContain('Threshold <strong>0.4321</strong>');
    expect(html).toContain('chosen on the validation split and applied unchanged to test');
    expect(html).toMatch(/<th>validation<\/th><td>100<\/td><td>91\.0<\/td>/);
    expect(html).toMatch(/<th>test<\/th><td>100<\/td><td>87\.0<\/td>/);
    expect(html).toContain('<a href="02-a.html">A &lt;title&gt;</a>');
    const comparison = html.slice(html.indexOf('<section id="runs-comparison">'));
    expect(comparison).toContain('<a href="06-compare-runs.html">Compare runs</a>');
    expect(html).toContain('<a href="../run/app/index.html">Try the model in your browser</a>');
    // Parts the run folder lacks are named, not silently left out.
    expect(html).toContain('No config.json in the run folder');
  });

  it('says where a runs comparison will go when there is none, and has no app link without an app', () => {
    const html = summaryHtml({
      pages: pages.slice(0, 1),
      run: { ...run, app: undefined },
      outDir: '/r/report',
      generatedAt: new Date(0),
      settings: {},
    });
    expect(html).toContain('No runs-comparison notebook in this report yet');
    expect(html).not.toContain('Try the model');
  });

  it('lists the out-of-time validation part in the split table when the split has one', () => {
    const c = (n: number, p: number, patients: number) => ({ images: { NORMAL: n, PNEUMONIA: p }, patients });
    const split = {
      seed: 1,
      testSource: 'carved' as const,
      counts: { train: c(8, 9, 15), val: c(2, 2, 4), test: c(3, 3, 6), valTime: c(1, 2, 3) },
    };
    const html = summaryHtml({
      pages: pages.slice(0, 1),
      run: { ...run, split },
      outDir: '/r/report',
      generatedAt: new Date(0),
      settings: {},
    });
    expect(html).toContain('<tr><th>out-of-time val</th><td>1</td><td>2</td><td>3</td><td>3</td></tr>');
    expect(html).toContain('<tr><th>train</th><td>8</td><td>9</td><td>17</td><td>15</td></tr>');
  });

  it('describes threshold rules in words', () => {
    expect(describeRule('recall=0.98')).toMatch(/validation recall \(sensitivity\) at 98\.0%/);
    expect(describeRule('youden')).toMatch(/Youden/);
    expect(describeRule('fixed=0.5')).toBe('a fixed threshold of 0.5');
  });

  it('reads a run folder, naming files it cannot read', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'run-summary-'));
    const file = {
      schema: 1,
      threshold: 0.5,
      thresholdRule: { kind: 'youden' },
      val: metrics(0.9),
      test: metrics(0.8),
      bestEpoch: 2,
      epochsRun: 3,
      imageSize: 64,
      writtenBy: 'test',
    };
    fs.writeFileSync(path.join(dir, 'metrics.json'), JSON.stringify(file));
    fs.writeFileSync(path.join(dir, 'history.json'), '{not json');
    fs.mkdirSync(path.join(dir, 'app'));
    fs.writeFileSync(path.join(dir, 'app', 'index.html'), '<p>app</p>');
    const summary = await readRunSummary(dir);
    expect(summary.metrics?.rule).toBe('youden');
    expect(summary.config).toBeUndefined();
    expect(summary.app).toBe(path.join(dir, 'app', 'index.html'));
    expect(summary.problems).toEqual([expect.stringMatching(/^history\.json: .*not valid JSON/)]);
    // The summary reads metrics.json with the one reader: an older shape is named, not shown half-read.
    fs.writeFileSync(
      path.join(dir, 'metrics.json'),
      JSON.stringify({ threshold: 0.5, rule: 'youden', val: metrics(0.9), test: metrics(0.8) }),
    );
    const old = await readRunSummary(dir);
    expect(old.metrics).toBeUndefined();
    expect(old.problems).toContainEqual(expect.stringMatching(/^metrics\.json: .*an older 05-evaluate wrote it/));
  });
});

describe('npm run report without Jupyter', () => {
  const cli = path.resolve(__dirname, '..', 'dist', 'cli', 'report.js');
  it.skipIf(!fs.existsSync(cli))(
    `says which apt package installs nbconvert${fs.existsSync(cli) ? '' : ' — SKIPPED: dist/ not built (npm run build)'}`,
    () => {
      const r = spawnSync(process.execPath, [cli, '--epochs', '1'], {
        encoding: 'utf8',
        env: { ...process.env, PATH: '/nonexistent', PNEUMO_JUPYTER_VENV: '/nonexistent' },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/jupyter is not installed/);
      expect(r.stderr).toMatch(/apt-get install jupyter-nbconvert/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    },
  );

  it.skipIf(!fs.existsSync(cli))('rejects a bad flag value with a clear message', () => {
    const r = spawnSync(process.execPath, [cli, '--epochs', 'many'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/expected a positive integer, got 'many'/);
  });
});

describe('npm run lab / npm run kernel without Jupyter', () => {
  const dist = path.resolve(__dirname, '..', 'dist', 'cli');
  const built = fs.existsSync(path.join(dist, 'lab.js'));
  it.skipIf(!built)(`explain how to install Jupyter${built ? '' : ' — SKIPPED: dist/ not built (npm run build)'}`, () => {
    for (const cli of ['lab.js', 'kernel.js']) {
      const r = spawnSync(process.execPath, [path.join(dist, cli)], {
        encoding: 'utf8',
        env: { ...process.env, PATH: '/nonexistent', PNEUMO_JUPYTER_VENV: '/nonexistent' },
      });
      expect(r.status, cli).toBe(1);
      expect(r.stderr, cli).toMatch(/apt-get install jupyter-notebook/);
      expect(r.stderr, cli).toMatch(/pip install jupyterlab/);
    }
  });
});
