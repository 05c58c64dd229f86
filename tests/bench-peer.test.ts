/** Choosing the benchmark's PyTorch peer: pip's configuration, the local wheel, the Python candidates. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { PEER_VENV, findPeerPython, findTorchWheel, peerPythonCandidates, pipConfigValues } from '../src/bench/peer';

const PIP_CONFIG = `:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
`;

describe('the PyTorch peer', () => {
  it("reads pip's find-links and index values, splitting whitespace-separated lists and dropping repeats", () => {
    expect(pipConfigValues(PIP_CONFIG, 'find-links')).toEqual(['/opt/wheels']);
    expect(pipConfigValues(PIP_CONFIG, 'extra-index-url')).toEqual(['file:///opt/pypi/simple', 'file:///opt/pypi-more/simple']);
    expect(pipConfigValues(PIP_CONFIG, 'index-url')).toEqual([]);
    expect(pipConfigValues('', 'find-links')).toEqual([]);
  });

  it('finds the newest torch 2.x wheel and ignores 1.x wheels, other packages and missing folders', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wheels-'));
    for (const f of [
      'torch-1.13.0-cp311-none-linux_x86_64.whl',
      'torchvision-0.20.0-cp311.whl',
      'torch-2.5.1+cpu-cp311.whl',
      'torch-2.13.0+cpu-cp311.whl',
    ]) {
      fs.writeFileSync(path.join(dir, f), '');
    }
    expect(findTorchWheel([path.join(dir, 'absent'), dir])).toBe(path.join(dir, 'torch-2.13.0+cpu-cp311.whl'));
    expect(findTorchWheel([path.join(dir, 'absent')])).toBeUndefined();
    fs.rmSync(dir, { recursive: true });
  });

  it('prefers an explicit python, then the project environment, then Debian python3; names the fix when none has torch', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-root-'));
    expect(peerPythonCandidates(root, '/x/python')).toEqual(['/x/python']);
    expect(peerPythonCandidates(root, '')[0]).not.toContain(PEER_VENV);
    fs.mkdirSync(path.join(root, PEER_VENV, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(root, PEER_VENV, 'bin', 'python'), '');
    expect(peerPythonCandidates(root, '')[0]).toBe(path.join(root, PEER_VENV, 'bin', 'python'));
    expect(() => findPeerPython(root, path.join(root, 'no-python'))).toThrow(/bench:peer-setup/);
    fs.rmSync(root, { recursive: true });
  });
});
