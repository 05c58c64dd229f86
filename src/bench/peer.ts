/**
 * The PyTorch peer of `npm run bench:train -- --peer`: which Python runs it, and a project-local virtual environment
 * with the PyTorch 2.x a Python user would run today.
 *
 * Debian's python3-torch is 1.13; the machine images here ship a PyTorch 2.x CPU wheel in pip's find-links folder
 * and a local package index (both named by `pip config list`). `npm run bench:peer-setup` installs that wheel into
 * `.venv-peer/`, offline, and the benchmark prefers it; elsewhere it falls back to Debian's torch.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export const PEER_VENV = '.venv-peer';

/** Values of one key in `pip config list` output (`global.find-links='/opt/wheels'`), whitespace-separated ones split. */
export function pipConfigValues(listOutput: string, key: string): string[] {
  const values: string[] = [];
  for (const line of listOutput.split('\n')) {
    const m = /^[^.=\s]*\.([\w-]+)='(.*)'$/.exec(line.trim());
    if (m && m[1] === key) values.push(...m[2].split(/\s+/).filter(Boolean));
  }
  return [...new Set(values)];
}

function pipConfig(): string {
  const r = spawnSync('python3', ['-m', 'pip', 'config', 'list'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout : '';
}

/** The newest PyTorch 2.x wheel in the given folders, or undefined. */
export function findTorchWheel(dirs: readonly string[]): string | undefined {
  const wheels = dirs
    .filter((d) => fs.existsSync(d) && fs.statSync(d).isDirectory())
    .flatMap((d) =>
      fs
        .readdirSync(d)
        .filter((f) => /^torch-2\.\d+.*\.whl$/.test(f))
        .map((f) => path.join(d, f)),
    );
  const version = (wheel: string) => (/^torch-(\d+)\.(\d+)\.?(\d*)/.exec(path.basename(wheel)) ?? []).slice(1).map(Number);
  const newer = (a: string, b: string) => {
    const [va, vb] = [version(a), version(b)];
    const i = va.findIndex((v, k) => v !== vb[k]);
    return i < 0 ? 0 : va[i] - vb[i];
  };
  return wheels.sort(newer).at(-1);
}

/** The torch version a Python imports, or undefined when it has none. */
export function torchVersion(python: string): string | undefined {
  const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * The Pythons to try, best first: an explicit choice, the project's PyTorch 2.x environment, Debian's python3
 * (its python3-torch; a pyenv shim earlier on PATH may hide it), then whatever python3 is on PATH.
 */
export function peerPythonCandidates(repoRoot: string, explicit = process.env.PNEUMO_PEER_PYTHON): string[] {
  if (explicit) return [explicit];
  return [path.join(repoRoot, PEER_VENV, 'bin', 'python'), '/usr/bin/python3', 'python3'].filter(
    (p) => !path.isAbsolute(p) || fs.existsSync(p),
  );
}

export interface PeerPython {
  python: string;
  torch: string;
}

export function findPeerPython(repoRoot: string, explicit?: string): PeerPython {
  const tried = peerPythonCandidates(repoRoot, explicit);
  for (const python of tried) {
    const torch = torchVersion(python);
    if (torch) return { python, torch };
  }
  throw new Error(
    `--peer: none of ${tried.join(', ')} can import torch. Run 'npm run bench:peer-setup' (PyTorch 2.x from pip's local ` +
      `wheels), or apt-get install python3-torch python3-pil, or pass --peer-python.`,
  );
}

/** Creates `.venv-peer/` with PyTorch 2.x, numpy and pillow from pip's configured local wheels and index. */
export function setupPeerVenv(repoRoot: string, log: (line: string) => void = console.log): PeerPython {
  const config = pipConfig();
  const findLinks = pipConfigValues(config, 'find-links');
  const wheel = findTorchWheel(findLinks);
  if (!wheel) {
    throw new Error(
      `no PyTorch 2.x wheel in pip's find-links (${findLinks.join(', ') || 'none configured'}); ` +
        `install one with 'pip install torch' into ${PEER_VENV}/ where the internet is reachable, or use Debian's python3-torch.`,
    );
  }
  const venv = path.join(repoRoot, PEER_VENV);
  const python = path.join(venv, 'bin', 'python');
  if (!fs.existsSync(python)) {
    log(`creating ${venv}`);
    run('python3', ['-m', 'venv', venv]);
  }
  // A local index replaces the network one, so nothing waits on an unreachable host.
  const localIndex = [...pipConfigValues(config, 'index-url'), ...pipConfigValues(config, 'extra-index-url')].filter((u) =>
    u.startsWith('file:'),
  );
  const indexArgs = localIndex.length
    ? ['--index-url', localIndex[0], ...localIndex.slice(1).flatMap((u) => ['--extra-index-url', u])]
    : [];
  log(`installing ${path.basename(wheel)}, numpy and pillow into ${venv}${localIndex.length ? ` (index ${localIndex.join(' ')})` : ''}`);
  run(python, ['-m', 'pip', 'install', '--quiet', ...indexArgs, wheel, 'numpy', 'pillow']);
  const torch = torchVersion(python);
  if (!torch) throw new Error(`${python} cannot import torch after the install; see the pip output above.`);
  return { python, torch };
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`'${cmd} ${args.join(' ')}' failed (exit ${r.status ?? r.signal}).`);
}
