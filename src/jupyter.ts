/**
 * Finding Jupyter on this machine and registering the tslab kernel for this checkout. Shared by
 * `npm run kernel`, `npm run lab`, `npm run report` and the notebook tests.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const repoRoot = path.resolve(__dirname, '..');
export const KERNEL_NAME = 'tslab';

/** Debian packages that provide each Jupyter piece; named in every "missing" message. */
export const APT_HINT = {
  nbconvert: 'sudo apt-get install jupyter-nbconvert jupyter-client python3-ipykernel',
  notebook: 'sudo apt-get install jupyter-notebook python3-ipykernel',
  lab: 'pip install jupyterlab   (JupyterLab is not packaged in Debian; the classic notebook is: apt-get install jupyter-notebook)',
};

/** First executable called `name` on PATH, or null. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function run(cmd: string, args: string[], timeoutMs = 60_000): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { ok: !r.error && r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? String(r.error ?? '') };
}

/** Whether `jupyter <sub>` works (e.g. 'nbconvert', 'notebook', 'lab'). */
export function hasJupyterCommand(sub: string): boolean {
  if (!which('jupyter')) return false;
  return run('jupyter', [sub, '--version']).ok;
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
 * The python that runs the `jupyter` on PATH (the kernel spec must be written where that Jupyter looks), else the
 * first python with jupyter_client importable.
 */
export function jupyterPython(): string | null {
  const jupyter = which('jupyter');
  const candidates = [jupyter ? shebangPython(jupyter) : null, '/usr/bin/python3', which('python3'), which('python')];
  for (const py of candidates) {
    if (py && run(py, ['-c', 'import jupyter_client']).ok) return py;
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
  const r = run('jupyter', ['kernelspec', 'list', '--json']);
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
  if (!which('jupyter')) {
    throw new Error(`Jupyter is not on PATH. Install it first:\n  ${APT_HINT.notebook}\n  ${APT_HINT.nbconvert}`);
  }
  const binary = tslabBinary(root);
  if (!fs.existsSync(binary)) throw new Error(`${binary} is missing: run \`npm ci\` in ${root} first.`);
  const current = kernelSpecs().find((k) => k.name === KERNEL_NAME);
  if (current && current.argv[0] === binary) return { status: 'already-registered', spec: current, python: null };

  const python = jupyterPython();
  if (!python) {
    throw new Error(`No python with jupyter_client found (tried the python of ${which('jupyter')}, /usr/bin/python3, python3).\n  ${APT_HINT.nbconvert}`);
  }
  const r = run(binary, ['install', `--python=${python}`, `--binary=${binary}`]);
  if (!r.ok) throw new Error(`tslab install failed:\n${r.stdout}${r.stderr}`);
  const spec = kernelSpecs().find((k) => k.name === KERNEL_NAME);
  if (!spec || spec.argv[0] !== binary) {
    throw new Error(`tslab install ran but \`jupyter kernelspec list\` does not show a '${KERNEL_NAME}' kernel using ${binary}.\n${r.stdout}${r.stderr}`);
  }
  return { status: 'registered', spec, python };
}
