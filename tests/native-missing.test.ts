/**
 * Without the addon (not built, or no oneDNN on the machine) the native backend must say why
 * and stay out of the way; this runs everywhere, built or not.
 */
import { describe, expect, it } from 'vitest';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';

describe('native backend without its addon', () => {
  it('tryRegisterNative returns ok:false with the fix, and registers nothing', async () => {
    process.env.PNEUMO_NATIVE_ADDON = path.join(__dirname, 'no-such-dir', 'pneumo_native.node');
    const { tryRegisterNative } = await import('../src/backend/native');
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
});
