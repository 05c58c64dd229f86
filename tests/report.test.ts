import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { describe, expect, it } from 'vitest';
import {
  dropLocalScriptRefs,
  externalizePlotly,
  indexHtml,
  listNotebooks,
  notebookEnv,
  notebookTitle,
  selectNotebooks,
  summarizeNbconvertError,
} from '../src/report';
import { PLOTLY_SCRIPT_ID } from '../src/viz/display';
import { shebangPython } from '../src/jupyter';

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
    const index = indexHtml([{ name: '02-a', title: 'A <title>', page: '02-a.html', seconds: 3 }], { epochs: 1 }, new Date(0));
    expect(index).toContain('<a href="02-a.html">A &lt;title&gt;</a>');
    expect(index).toContain('<code>1</code>');
  });

  it('--only picks notebooks by name prefix and names the ones that do not exist', () => {
    const all = ['/n/00-smoke.ipynb', '/n/04-train.ipynb', '/n/05-evaluate.ipynb'];
    expect(selectNotebooks(all, ['05'])).toEqual(['/n/05-evaluate.ipynb']);
    expect(selectNotebooks(all, ['04-train', '05'])).toEqual(['/n/04-train.ipynb', '/n/05-evaluate.ipynb']);
    expect(() => selectNotebooks(all, ['07'])).toThrow(/No notebook matches '07'; notebooks: 00-smoke, 04-train, 05-evaluate/);
  });

  it('keeps the failing cell from nbconvert stderr', () => {
    const stderr = 'Traceback (most recent call last):\n  File x\nAn error occurred while executing the following cell:\n------\nthrow 1\n------\nError: boom';
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

describe('npm run report without Jupyter', () => {
  const cli = path.resolve(__dirname, '..', 'dist', 'cli', 'report.js');
  it.skipIf(!fs.existsSync(cli))(`says which apt package installs nbconvert${fs.existsSync(cli) ? '' : ' — SKIPPED: dist/ not built (npm run build)'}`, () => {
    const r = spawnSync(process.execPath, [cli, '--epochs', '1'], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent', PNEUMO_JUPYTER_VENV: '/nonexistent' } });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/jupyter is not installed/);
    expect(r.stderr).toMatch(/apt-get install jupyter-nbconvert/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });

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
      const r = spawnSync(process.execPath, [path.join(dist, cli)], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent', PNEUMO_JUPYTER_VENV: '/nonexistent' } });
      expect(r.status, cli).toBe(1);
      expect(r.stderr, cli).toMatch(/apt-get install jupyter-notebook/);
      expect(r.stderr, cli).toMatch(/pip install jupyterlab/);
    }
  });
});
