/** Which CPU a benchmark ran on (src/accel/cpu.ts): the vector ISA from the flags, the caps from the environment. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cpuDescription, cpuFlags, describeCpu, widestVectorIsa } from '../src/accel/cpu';

describe('cpu description', () => {
  it('names the widest vectors the flags offer', () => {
    expect(widestVectorIsa(['fpu', 'sse2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512bw'])).toBe('AVX-512');
    expect(widestVectorIsa(['fpu', 'sse2', 'avx', 'avx2', 'fma'])).toBe('AVX2');
    expect(widestVectorIsa(['fpu', 'sse2', 'avx', 'avx2'])).toBe('SSE'); // AVX2 without FMA is not x86-64-v3
    expect(widestVectorIsa(['fpu', 'sse2', 'sse4_2'])).toBe('SSE');
    expect(widestVectorIsa(undefined)).toBe('unknown');
  });

  it("reads the first processor's flags, and nothing where the file is missing", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cpuinfo-'));
    const file = path.join(dir, 'cpuinfo');
    fs.writeFileSync(
      file,
      'processor\t: 0\nmodel name\t: Zen\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma avx512f\n',
    );
    expect(cpuFlags(file)).toEqual(['fpu', 'sse2', 'avx2', 'fma']);
    expect(cpuDescription({ cpuinfo: file, env: {} }).cpu_isa).toBe('AVX2');
    expect(cpuFlags(path.join(dir, 'missing'))).toBeUndefined();
    expect(cpuDescription({ cpuinfo: path.join(dir, 'missing'), env: {} }).cpu_isa).toBe('unknown');
  });

  it('lists the ISA caps that are set, and the native build, beside the CPU', () => {
    const capped = cpuDescription({
      env: { DNNL_MAX_CPU_ISA: 'AVX2', ATEN_CPU_CAPABILITY: 'avx2', PATH: '/bin' },
      nativeVectorLanes: 8,
    });
    expect(capped.cpu).toBe(os.cpus()[0].model.trim());
    expect(capped.isa_caps).toBe('DNNL_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2');
    expect(capped.native_vector_lanes).toBe(8);
    expect(describeCpu({ ...capped, cpu: 'Some CPU', cpu_isa: 'AVX-512' })).toBe(
      "cpu: Some CPU, AVX-512; capped: DNNL_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2; native addon's loops 8 lanes wide",
    );
    const plain = cpuDescription({ env: {} });
    expect(plain).not.toHaveProperty('isa_caps');
    expect(plain).not.toHaveProperty('native_vector_lanes');
    expect(describeCpu({ ...plain, cpu: 'Some CPU', cpu_isa: 'AVX2' })).toBe('cpu: Some CPU, AVX2');
  });
});
