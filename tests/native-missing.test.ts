/**
 * Without the addon (not built, or no oneDNN on the machine) the native backend must say why
 * and stay out of the way; this runs everywhere, built or not.
 */
import { describe, expect, it, vi } from 'vitest';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';

describe('native backend without its addon', () => {
  it('tryRegisterNative returns ok:false with the fix, and registers nothing', async () => {
    process.env.PNEUMO_NATIVE_ADDON = path.join(__dirname, 'no-such-dir', 'pneumo_native.node');
    const { tryRegisterNative } = await import('../src/accel/onednn');
    const result = tryRegisterNative();
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.why).toContain('npm run build:native');
      expect(result.why).toContain('libdnnl-dev');
    }
    expect(tf.findBackendFactory('native')).toBeNull();
    expect(tf.getKernelsForBackend('native')).toEqual([]);
    delete process.env.PNEUMO_NATIVE_ADDON;
  });

  const built = fs.existsSync(path.join(__dirname, '..', 'accel', 'onednn', 'build', 'Release', 'pneumo_native.node'));
  it.skipIf(!built)('a bad PNEUMO_NATIVE_THREADS is reported, not thrown (needs the built addon)', async () => {
    vi.resetModules();
    process.env.PNEUMO_NATIVE_THREADS = 'two';
    const { tryRegisterNative } = await import('../src/accel/onednn');
    const result = tryRegisterNative();
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.why).toContain('PNEUMO_NATIVE_THREADS');
    delete process.env.PNEUMO_NATIVE_THREADS;
  });
});
