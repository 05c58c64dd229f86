/**
 * Which CPU a measurement ran on. This project's machines differ about 3x in speed (an AVX-512 Xeon against an
 * AVX2-only EPYC), and speeds can be capped to emulate the narrower one, so a figure is only comparable with the CPU,
 * its widest vectors and any cap beside it; the benchmarks print this with their results.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** The widest float vectors a CPU's flags offer. */
export type VectorIsa = 'AVX-512' | 'AVX2' | 'SSE' | 'unknown';

/** The environment variables that cap oneDNN's (ours and PyTorch's) and PyTorch's own kernels to a narrower ISA. */
export const ISA_CAP_VARIABLES = ['ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY'] as const;

export interface CpuDescription {
  cpu: string;
  cpu_isa: VectorIsa;
  /** e.g. "DNNL_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2"; absent when nothing is capped. */
  isa_caps?: string;
  /** Float lanes of the native addon's own loops (16, 8 or 4), when the `native` backend runs. */
  native_vector_lanes?: number;
}

export function widestVectorIsa(flags: readonly string[] | undefined): VectorIsa {
  if (!flags) return 'unknown';
  if (flags.includes('avx512f')) return 'AVX-512';
  if (flags.includes('avx2') && flags.includes('fma')) return 'AVX2';
  return 'SSE';
}

/** The first processor's flags in a /proc/cpuinfo-style file; undefined where it cannot be read (not Linux). */
export function cpuFlags(cpuinfo = '/proc/cpuinfo'): string[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(cpuinfo, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.split('\n').find((l) => /^flags\s*:/.test(l));
  return line
    ?.replace(/^flags\s*:/, '')
    .trim()
    .split(/\s+/);
}

export function cpuDescription(opts: { env?: NodeJS.ProcessEnv; cpuinfo?: string; nativeVectorLanes?: number } = {}): CpuDescription {
  const env = opts.env ?? process.env;
  const description: CpuDescription = {
    cpu: os.cpus()[0]?.model.trim() || 'unknown CPU',
    cpu_isa: widestVectorIsa(cpuFlags(opts.cpuinfo)),
  };
  const caps = ISA_CAP_VARIABLES.filter((name) => env[name]).map((name) => `${name}=${env[name]}`);
  if (caps.length > 0) description.isa_caps = caps.join(', ');
  if (opts.nativeVectorLanes) description.native_vector_lanes = opts.nativeVectorLanes;
  return description;
}

/** "Intel(R) Xeon(R) Processor, AVX-512; capped: DNNL_MAX_CPU_ISA=AVX2; native addon's loops 8 lanes wide" */
export function formatCpu(d: CpuDescription): string {
  const parts = [`${d.cpu}, ${d.cpu_isa}`];
  if (d.isa_caps) parts.push(`capped: ${d.isa_caps}`);
  if (d.native_vector_lanes) parts.push(`native addon's loops ${d.native_vector_lanes} lanes wide`);
  return parts.join('; ');
}

/** The benchmarks' line: "cpu: " and formatCpu. */
export function describeCpu(d: CpuDescription): string {
  return `cpu: ${formatCpu(d)}`;
}
