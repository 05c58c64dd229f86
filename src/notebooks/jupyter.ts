/**
 * Finding Jupyter on this machine and registering the tslab kernel for this checkout. Shared by
 * `npm run kernel`, `npm run lab`, `npm run report` and the notebook tests.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { repoRoot } from '../paths';

export const KERNEL_NAME = 'tslab';

/** Debian packages that provide each Jupyter piece; named in every "missing" message. */
export const APT_HINT = {
  nbconvert: 'sudo apt-get install jupyter-nbconvert jupyter-client python3-ipykernel',
  notebook: 'sudo apt-get install jupyter-notebook python3-ipykernel',
};

/**
 * Where `.ci/run` (and the install hint) put JupyterLab: a virtual environment inside the checkout, so installing it
 * leaves the system's and pyenv's Jupyter (which other checkouts on the machine use) exactly as they were.
 */
export const LOCAL_JUPYTER_VENV = path.join(repoRoot, '.venv-jupyter');

/** Every executable called `name` on PATH, in PATH order (like `which -a`). */
export function whichAll(name: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const found: string[] = [];
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile() && !found.includes(candidate)) found.push(candidate);
    } catch {
      // not here
    }
  }
  return found;
}

/** First executable called `name` on PATH, or null. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  return whichAll(name, env)[0] ?? null;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { ok: !r.error && r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** Whether `<jupyter> <sub> --version` works (e.g. 'nbconvert', 'notebook', 'lab'). */
export function jupyterHas(jupyter: string, sub: string): boolean {
  return run(jupyter, [sub, '--version']).ok;
}

/**
 * The `jupyter` executables worth considering, best first: the checkout's JupyterLab venv (`$PNEUMO_JUPYTER_VENV`
 * moves it), then every `jupyter` on PATH.
 */
export function jupyterCandidates(env: NodeJS.ProcessEnv = process.env, venv = env.PNEUMO_JUPYTER_VENV || LOCAL_JUPYTER_VENV): string[] {
  const venvJupyter = path.join(venv, 'bin', 'jupyter');
  const list = [...(fs.existsSync(venvJupyter) ? [venvJupyter] : []), ...whichAll('jupyter', env)];
  return [...new Set(list)];
}

/**
 * The one Jupyter that every command uses: kernel registration, `npm run lab`, the report's nbconvert and the live
 * browser tests. Two Jupyters on one machine (Debian's and a pip-installed JupyterLab) differ in nbconvert version,
 * templates and kernel-spec paths, so mixing them would register the kernel for one and run the other.
 * `$PNEUMO_JUPYTER` picks one by hand; otherwise the first candidate with JupyterLab and nbconvert wins, then the first
 * with nbconvert, then the first at all.
 */
export function chooseJupyter(candidates: string[], has: (jupyter: string, sub: string) => boolean): string | null {
  return (
    candidates.find((j) => has(j, 'lab') && has(j, 'nbconvert')) ?? candidates.find((j) => has(j, 'nbconvert')) ?? candidates[0] ?? null
  );
}

let chosen: { key: string; jupyter: string | null } | undefined;

/** The Jupyter this process uses (see chooseJupyter), or null when there is none; decided once per process. */
export function jupyterExecutable(env: NodeJS.ProcessEnv = process.env): string | null {
  const key = `${env.PNEUMO_JUPYTER ?? ''}\0${env.PNEUMO_JUPYTER_VENV ?? ''}\0${env.PATH ?? ''}`;
  if (chosen?.key === key) return chosen.jupyter;
  let jupyter: string | null;
  if (env.PNEUMO_JUPYTER) {
    const named = env.PNEUMO_JUPYTER.includes('/') ? env.PNEUMO_JUPYTER : which(env.PNEUMO_JUPYTER, env);
    if (!named || !fs.existsSync(named)) throw new Error(`PNEUMO_JUPYTER=${env.PNEUMO_JUPYTER} is not an executable jupyter.`);
    jupyter = named;
  } else {
    jupyter = chooseJupyter(jupyterCandidates(env), jupyterHas);
  }
  chosen = { key, jupyter };
  return jupyter;
}

/** Whether the chosen Jupyter has `jupyter <sub>` (e.g. 'nbconvert', 'notebook', 'lab'). */
export function hasJupyterCommand(sub: string): boolean {
  const jupyter = jupyterExecutable();
  return jupyter !== null && jupyterHas(jupyter, sub);
}

/** The chosen Jupyter's version line for `sub` (e.g. JupyterLab's '4.6.4'), or null. */
export function jupyterVersion(sub: string): string | null {
  const jupyter = jupyterExecutable();
  if (!jupyter) return null;
  const r = run(jupyter, [sub, '--version']);
  return r.ok ? r.stdout.trim().split('\n').pop()!.trim() : null;
}

/**
 * `file://` wheel indexes named in `pip config list` output that hold a `jupyterlab` project (an offline machine's
 * local mirror), in the order pip lists them.
 */
export function localLabIndexes(pipConfig: string, exists: (dir: string) => boolean = fs.existsSync): string[] {
  const urls: string[] = [];
  for (const line of pipConfig.split('\n')) {
    const m = /^[^=]*index-url\s*=\s*'?([^']*)'?\s*$/.exec(line.trim());
    if (!m) continue;
    for (const url of m[1].split(/\s+/)) {
      if (!url.startsWith('file://')) continue;
      const dir = decodeURIComponent(url.slice('file://'.length)).replace(/\/+$/, '');
      if (exists(path.join(dir, 'jupyterlab')) && !urls.includes(url)) urls.push(url);
    }
  }
  return urls;
}

/** The local wheel index with JupyterLab that `pip config list` names on this machine, or null. */
export function localLabIndex(): string | null {
  const python = which('python3') ?? which('python');
  if (!python) return null;
  const r = run(python, ['-m', 'pip', 'config', 'list']);
  return r.ok ? (localLabIndexes(r.stdout)[0] ?? null) : null;
}

/** How to install JupyterLab here: from the local wheel index when pip's config names one, else from PyPI. */
export function labInstallHint(index: string | null = localLabIndex()): string {
  const venv = path.relative(process.cwd(), LOCAL_JUPYTER_VENV) || LOCAL_JUPYTER_VENV;
  const pip = `${venv}/bin/pip install`;
  const make = `python3 -m venv ${venv} && `;
  return index
    ? `${make}${pip} --index-url ${index} jupyterlab   (this machine's local wheel index, from \`pip config list\`)\n` +
        `  or, with internet: ${make}${pip} jupyterlab   (or plain \`pip install jupyterlab\`)`
    : `${make}${pip} jupyterlab   (or plain \`pip install jupyterlab\`; JupyterLab is not packaged in Debian)`;
}

/** The python interpreter named in a script's `#!` line, if it is one. */
export function shebangPython(script: string): string | null {
  try {
    const first = fs.readFileSync(script, 'utf8').split('\n', 1)[0];
    const m = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
    if (!m) return null;
    // `#!/usr/bin/env python3` names the interpreter in its second word.
    const interpreter = path.basename(m[1]) === 'env' && m[2] ? which(m[2]) : m[1];
    return interpreter && /python/.test(path.basename(interpreter)) ? interpreter : null;
  } catch {
    return null;
  }
}

/**
 * The python that runs the chosen `jupyter` (the kernel spec must be written where that Jupyter looks): its `#!`
 * interpreter, else a `python3` beside it (a pyenv shim is a bash script, and its sibling shim runs the same
 * version), else the first python with jupyter_client importable.
 */
export function jupyterPython(jupyter: string | null = jupyterExecutable()): string | null {
  const sibling = (name: string) => (jupyter ? path.join(path.dirname(jupyter), name) : null);
  const candidates = [
    jupyter ? shebangPython(jupyter) : null,
    sibling('python3'),
    sibling('python'),
    '/usr/bin/python3',
    which('python3'),
    which('python'),
  ];
  for (const py of candidates) {
    if (py && fs.existsSync(py) && run(py, ['-c', 'import jupyter_client']).ok) return py;
  }
  return null;
}

export interface KernelSpec {
  name: string;
  dir: string;
  argv: string[];
}

/** The installed kernel specs, as `jupyter kernelspec list --json` reports them. */
export function kernelSpecs(): KernelSpec[] {
  const jupyter = jupyterExecutable();
  if (!jupyter) return [];
  const r = run(jupyter, ['kernelspec', 'list', '--json']);
  if (!r.ok) return [];
  const parsed = JSON.parse(r.stdout) as { kernelspecs: Record<string, { resource_dir: string; spec: { argv: string[] } }> };
  return Object.entries(parsed.kernelspecs).map(([name, k]) => ({ name, dir: k.resource_dir, argv: k.spec.argv }));
}

export function tslabBinary(root = repoRoot): string {
  return path.join(root, 'node_modules', '.bin', 'tslab');
}

export interface KernelRegistration {
  status: 'already-registered' | 'registered';
  spec: KernelSpec;
  python: string | null;
}

/**
 * Registers the tslab (TypeScript) and jslab kernels so that they start this checkout's tslab. Idempotent: a spec that
 * already points at this checkout's binary is left alone. Throws with the install command when Jupyter is missing.
 */
export function registerKernel(root = repoRoot): KernelRegistration {
  const jupyter = jupyterExecutable();
  if (!jupyter) {
    throw new Error(
      `Jupyter is not on PATH. Install it first:\n  ${APT_HINT.notebook}\n  ${APT_HINT.nbconvert}\n  or JupyterLab: ${labInstallHint()}`,
    );
  }
  const binary = tslabBinary(root);
  if (!fs.existsSync(binary)) throw new Error(`${binary} is missing: run \`npm ci\` in ${root} first.`);
  const current = kernelSpecs().find((k) => k.name === KERNEL_NAME);
  if (current && current.argv[0] === binary) return { status: 'already-registered', spec: current, python: null };

  const python = jupyterPython(jupyter);
  if (!python) {
    throw new Error(
      `No python with jupyter_client found (tried the python of ${jupyter}, /usr/bin/python3, python3).\n  ${APT_HINT.nbconvert}`,
    );
  }
  const r = run(binary, ['install', `--python=${python}`, `--binary=${binary}`]);
  if (!r.ok) throw new Error(`tslab install failed:\n${r.stdout}${r.stderr}`);
  const spec = kernelSpecs().find((k) => k.name === KERNEL_NAME);
  if (!spec || spec.argv[0] !== binary) {
    throw new Error(
      `tslab install ran but \`${jupyter} kernelspec list\` does not show a '${KERNEL_NAME}' kernel using ${binary}.\n${r.stdout}${r.stderr}`,
    );
  }
  return { status: 'registered', spec, python };
}
