/**
 * The oneDNN addon's own vector loops (Winograd, the separable and one-channel kernels, the element-wise passes)
 * are written once for the build's vector width: 16 lanes with AVX-512, 8 with AVX2, 4 with SSE. A build only
 * compiles the width of the CPU it runs on, so this builds the addon again for the narrower targets the CPU can
 * run (PNEUMO_NATIVE_MARCH, into outputs/isa-builds/, which git ignores) and runs the native kernel, conv-layer and fused-inference tests
 * against each (PNEUMO_NATIVE_ADDON): an AVX2-only machine's code is checked on an AVX-512 one.
 * Skipped, saying why, where the addon cannot be built here (no libdnnl-dev, no compiler) or the CPU lacks a target.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { loadNativeAddon, type NativeAddon } from '../src/accel/onednn';

const repoRoot = path.resolve(__dirname, '..');
const requireHere = createRequire(__filename);
const { gypRebuildAsync, nodeGyp } = requireHere('../accel/build.js') as {
  gypRebuildAsync(gyp: string, dir: string, env?: NodeJS.ProcessEnv): Promise<boolean>;
  nodeGyp(): string | undefined;
};

/**
 * A Node child process's exit status and output. Asynchronous on purpose: a build and a test run back to back,
 * synchronously, kept this worker from answering vitest for over 60 s and failed the whole run.
 */
function runNode(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, env, timeout: timeoutMs });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (err) => resolve({ status: null, output: `${output}\n${err.message}` }));
    child.on('close', (status) => resolve({ status, output }));
  });
}

const loaded = loadNativeAddon();
const gyp = nodeGyp();
const skipWhy = 'why' in loaded ? loaded.why : gyp ? '' : 'node-gyp is not installed';
if (skipWhy) console.warn(`[native ISA build tests skipped] ${skipWhy}`);

const cpuFlags = new Set(
  fs.existsSync('/proc/cpuinfo') ? (/^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/) : [],
);
const TARGETS = [
  { march: 'x86-64-v3', lanes: 8, needs: ['avx2', 'fma', 'bmi2', 'f16c'] },
  { march: 'x86-64', lanes: 4, needs: ['sse2'] },
];

describe.skipIf(Boolean(skipWhy))('the native addon built for narrower vectors', () => {
  it.each(TARGETS)('$march ($lanes lanes): builds, and the native kernel tests pass against it', async ({ march, lanes, needs }) => {
    const missing = needs.filter((f) => !cpuFlags.has(f));
    if (missing.length > 0) {
      console.warn(`[${march} build skipped] this CPU lacks ${missing.join(', ')}`);
      return;
    }
    const dir = path.join(repoRoot, 'outputs', 'isa-builds', march);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    fs.cpSync(path.join(repoRoot, 'accel', 'onednn', 'binding.gyp'), path.join(dir, 'binding.gyp'));
    fs.cpSync(path.join(repoRoot, 'accel', 'onednn', 'src'), path.join(dir, 'src'), { recursive: true });
    const built = await gypRebuildAsync(gyp!, dir, { ...process.env, PNEUMO_NATIVE_MARCH: march });
    expect(built, `node-gyp failed for ${march}; see ${path.join(dir, 'build.log')}`).toBe(true);
    const file = path.join(dir, 'build', 'Release', 'pneumo_native.node');
    const addon = requireHere(file) as NativeAddon;
    expect(addon.vectorLanes()).toBe(lanes);
    expect((loaded as { addon: NativeAddon }).addon.vectorLanes()).toBeGreaterThanOrEqual(lanes);

    const vitest = path.join(repoRoot, 'node_modules', 'vitest', 'vitest.mjs');
    const { status, output } = await runNode(
      [
        vitest,
        'run',
        'tests/native-kernels.test.ts',
        'tests/accel-conv-patch.test.ts',
        'tests/accel-inference.test.ts',
        'tests/accel-train-pairs.test.ts',
      ],
      { ...process.env, PNEUMO_NATIVE_ADDON: file, NO_COLOR: '1', FORCE_COLOR: '0' },
      300_000,
    );
    expect(status, output.split('\n').slice(-40).join('\n')).toBe(0);
    // Every test ran: none skipped for want of the addon.
    expect(output).toMatch(/Tests\s+\d+ passed \(\d+\)/);
    expect(output).not.toMatch(/skipped/);
  });
});
