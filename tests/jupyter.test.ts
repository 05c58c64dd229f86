import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { chooseJupyter, jupyterCandidates, jupyterPython, labInstallHint, localLabIndexes } from '../src/notebooks/jupyter';

describe('choosing one Jupyter', () => {
  const has = (table: Record<string, string[]>) => (j: string, sub: string) => (table[j] ?? []).includes(sub);

  it('prefers the first Jupyter with JupyterLab and nbconvert, then one with nbconvert, then any', () => {
    const both = has({ '/debian/jupyter': ['nbconvert', 'notebook'], '/venv/jupyter': ['lab', 'nbconvert'] });
    expect(chooseJupyter(['/debian/jupyter', '/venv/jupyter'], both)).toBe('/venv/jupyter');
    const noLab = has({ '/a/jupyter': [], '/b/jupyter': ['nbconvert'] });
    expect(chooseJupyter(['/a/jupyter', '/b/jupyter'], noLab)).toBe('/b/jupyter');
    // A JupyterLab without nbconvert could not write the report: the one that can wins.
    const labOnly = has({ '/lab/jupyter': ['lab'], '/nb/jupyter': ['nbconvert'] });
    expect(chooseJupyter(['/lab/jupyter', '/nb/jupyter'], labOnly)).toBe('/nb/jupyter');
    expect(chooseJupyter(['/x/jupyter'], has({}))).toBe('/x/jupyter');
    expect(chooseJupyter([], has({}))).toBeNull();
  });

  it("puts the checkout's venv first, then every jupyter on PATH once", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jupyters-'));
    const mk = (p: string) => {
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, '#!/bin/sh\n', { mode: 0o755 });
    };
    mk(path.join(dir, 'venv', 'bin', 'jupyter'));
    mk(path.join(dir, 'a', 'jupyter'));
    mk(path.join(dir, 'b', 'jupyter'));
    const PATH = [path.join(dir, 'a'), path.join(dir, 'b'), path.join(dir, 'a')].join(path.delimiter);
    expect(jupyterCandidates({ PATH }, path.join(dir, 'venv'))).toEqual([
      path.join(dir, 'venv', 'bin', 'jupyter'),
      path.join(dir, 'a', 'jupyter'),
      path.join(dir, 'b', 'jupyter'),
    ]);
    expect(jupyterCandidates({ PATH }, path.join(dir, 'none'))).toEqual([path.join(dir, 'a', 'jupyter'), path.join(dir, 'b', 'jupyter')]);
  });

  it('finds the python beside a jupyter that is not a python script (a pyenv shim)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shim-'));
    fs.writeFileSync(path.join(dir, 'jupyter'), '#!/usr/bin/env bash\nexec pyenv exec jupyter "$@"\n', { mode: 0o755 });
    // A stand-in python that "imports jupyter_client" by exiting 0.
    fs.writeFileSync(path.join(dir, 'python3'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    expect(jupyterPython(path.join(dir, 'jupyter'))).toBe(path.join(dir, 'python3'));
  });
});

describe('how to install JupyterLab', () => {
  const pipConfig = [
    ":env:.default-timeout='180'",
    "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
    "global.index-url='https://pypi.org/simple'",
    "user.index-url='file:///srv/wheels/simple'",
  ].join('\n');

  it('reads file:// indexes that hold jupyterlab from `pip config list`', () => {
    const exists = (d: string) => d === '/opt/pypi/simple/jupyterlab' || d === '/srv/wheels/simple/jupyterlab';
    expect(localLabIndexes(pipConfig, exists)).toEqual(['file:///opt/pypi/simple', 'file:///srv/wheels/simple']);
    expect(localLabIndexes(pipConfig, () => false)).toEqual([]);
    expect(localLabIndexes('', () => true)).toEqual([]);
  });

  it('names the local index when there is one, and plain pip install jupyterlab either way', () => {
    const local = labInstallHint('file:///opt/pypi/simple');
    expect(local).toMatch(/pip install --index-url file:\/\/\/opt\/pypi\/simple jupyterlab/);
    expect(local).toMatch(/pip install jupyterlab/);
    const online = labInstallHint(null);
    expect(online).not.toMatch(/--index-url/);
    expect(online).toMatch(/pip install jupyterlab/);
  });
});
