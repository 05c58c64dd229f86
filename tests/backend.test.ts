/** Backend selection: order, skip reasons, forcing, idempotence, and never mistaking danfojs' shim for tfjs-node. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';

type SelectModule = typeof import('../src/accel');

/** A fresh copy of the module, so each test sees the first-call behaviour. */
async function freshSelect(): Promise<SelectModule> {
  vi.resetModules();
  return import('../src/accel');
}

function realTfjsNodeInstalled(): boolean {
  try {
    const pkg = require.resolve('@tensorflow/tfjs-node/package.json', { paths: [path.resolve(__dirname, '..')] });
    return require(pkg).name === '@tensorflow/tfjs-node';
  } catch {
    return false;
  }
}

afterEach(() => {
  delete process.env.PNEUMO_BACKEND;
});

describe('initBackend', () => {
  it('picks the first working backend, explains every skip, and is idempotent', async () => {
    const { initBackend, backendInfo, describeBackend, BACKEND_ORDER } = await freshSelect();
    expect(backendInfo()).toBeUndefined();
    const info = await initBackend({ quiet: true });
    const again = await initBackend({ prefer: 'cpu', quiet: true });
    expect(again).toBe(info);
    expect(backendInfo()).toBe(info);

    const chosen = BACKEND_ORDER.indexOf(info.name);
    expect(info.skipped.map((s) => s.name)).toEqual(BACKEND_ORDER.slice(0, chosen));
    for (const s of info.skipped) expect(s.why.length).toBeGreaterThan(0);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    if (!realTfjsNodeInstalled()) {
      // danfojs-node/node_modules/@tensorflow/tfjs-node is a shim over @tensorflow/tfjs; it must not count.
      expect(info.name).not.toBe('tfjs-node');
      expect(info.skipped.find((s) => s.name === 'tfjs-node')?.why).toMatch(/not installed|not the real|binding/);
    }
    expect(['tfjs-node-gpu', 'tfjs-node', 'native', 'wasm']).toContain(info.name);
    const expectedTf = { 'tfjs-node-gpu': 'tensorflow', 'tfjs-node': 'tensorflow', native: 'native', wasm: 'wasm', cpu: 'cpu' }[info.name];
    expect(tf.getBackend()).toBe(expectedTf);

    const line = describeBackend(info);
    expect(line).toMatch(new RegExp(`^backend: ${info.name} \\(threads: \\d+\\)`));
    for (const s of info.skipped) expect(line).toContain(`${s.name}: ${s.why}`);
  });

  it('honours PNEUMO_BACKEND', async () => {
    process.env.PNEUMO_BACKEND = 'cpu';
    const { initBackend } = await freshSelect();
    const info = await initBackend({ quiet: true });
    expect(info.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('honours prefer: wasm, with the training kernels registered', async () => {
    const { initBackend } = await freshSelect();
    const info = await initBackend({ prefer: 'wasm', quiet: true });
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeDefined();
    expect(tf.getKernel('DepthwiseConv2dNativeBackpropInput', 'wasm')).toBeDefined();
    // Multi-threaded in Node (see src/accel/wasm/setup.ts): one XNNPACK thread per core, capped at 8.
    const cores = os.cpus().length;
    if (cores >= 2) {
      expect(info.threads).toBe(Math.min(cores, 8));
      expect(info.note ?? '').not.toMatch(/single-threaded/);
    }
    const y = tf.tidy(() => tf.conv2d(tf.ones([1, 5, 5, 2]) as tf.Tensor4D, tf.ones([3, 3, 2, 4]) as tf.Tensor4D, 1, 'same'));
    expect(Array.from(y.dataSync()).slice(0, 4)).toEqual([8, 8, 8, 8]); // corner: 2x2 taps x 2 channels
    y.dispose();
  });

  it('fails clearly when a forced backend cannot load', async () => {
    if (realTfjsNodeInstalled()) return expect(realTfjsNodeInstalled()).toBe(true);
    process.env.PNEUMO_BACKEND = 'tfjs-node';
    const { initBackend } = await freshSelect();
    await expect(initBackend({ quiet: true })).rejects.toThrow(
      /Backend 'tfjs-node' was requested \(PNEUMO_BACKEND=tfjs-node\) but cannot load: .*choose another of: tfjs-node-gpu, native, wasm, cpu/,
    );
  });

  it('rejects an unknown backend name', async () => {
    process.env.PNEUMO_BACKEND = 'gpu-please';
    const { initBackend } = await freshSelect();
    await expect(initBackend({ quiet: true })).rejects.toThrow(/PNEUMO_BACKEND='gpu-please' is not a backend; use one of/);
  });

  it('prints one line unless quiet', async () => {
    const { initBackend } = await freshSelect();
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await initBackend({ prefer: 'cpu' });
      await initBackend({ prefer: 'cpu' });
      const lines = spy.mock.calls.map((c) => String(c[0])).filter((l) => l.startsWith('backend: '));
      expect(lines).toEqual(['backend: cpu (threads: 1) [pure JavaScript: slow for training]\n']);
    } finally {
      spy.mockRestore();
    }
  });
});
