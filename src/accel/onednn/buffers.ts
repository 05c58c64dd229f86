/**
 * Output buffers for the addon, recycled. A training step at 150x150 allocates gigabytes of
 * short-lived activations; as fresh ArrayBuffers they cost zero fills, page faults and a V8
 * mark-compact every few dozen ops. Buffers the addon allocated are counted per live dataId
 * (views made by CPU kernels count too) and go back to the pool when the last one is
 * disposed. Reads hand out copies, so no array a caller holds is ever reused.
 */
const POOL_MIN_BYTES = 64 * 1024;
// A 150x150 batch-32 training step frees ~1.5 GB of buffers between reuses; at 768 MB the rest
// went to the GC and came back as fresh, page-faulted allocations (and mark-compacts), which cost
// ~25% of a step. Peak RSS barely moves with the cap: unpooled buffers wait for the GC instead.
const poolCapBytes = Number(process.env.PNEUMO_NATIVE_POOL_MB ?? 2048) * 1024 * 1024;
const pool = new Map<number, Float32Array[]>();
let pooledBytes = 0;
const liveViews = new WeakMap<ArrayBufferLike, number>();

/** A float32 array of n elements for the addon to overwrite: from the pool when one of that size is free. */
export function uninitialised(n: number): Float32Array {
  if (n * 4 < POOL_MIN_BYTES) return new Float32Array(n);
  const reused = pool.get(n)?.pop();
  if (reused) {
    pooledBytes -= n * 4;
    return reused;
  }
  // Buffer.allocUnsafe: a dedicated, uninitialised ArrayBuffer (the addon overwrites it all).
  const buf = Buffer.allocUnsafe(n * 4);
  liveViews.set(buf.buffer, 0);
  return new Float32Array(buf.buffer, buf.byteOffset, n);
}

/** An int32 array of n elements for the addon to overwrite (the fused pairs' codes), from the same pool. */
export function uninitialisedInt32(n: number): Int32Array {
  const floats = uninitialised(n);
  return new Int32Array(floats.buffer, floats.byteOffset, n);
}

export function isPooled(values: unknown): values is Float32Array | Int32Array {
  return (values instanceof Float32Array || values instanceof Int32Array) && liveViews.has(values.buffer);
}

export function trackView(values: unknown, delta: 1 | -1): void {
  if (!isPooled(values)) return;
  const count = (liveViews.get(values.buffer) ?? 0) + delta;
  liveViews.set(values.buffer, count);
  if (count > 0) return;
  const bytes = values.buffer.byteLength;
  if (pooledBytes + bytes > poolCapBytes) return; // let the GC have it
  const whole = new Float32Array(values.buffer);
  const list = pool.get(whole.length) ?? [];
  list.push(whole);
  pool.set(whole.length, list);
  pooledBytes += bytes;
}

/** Drops every pooled buffer (memory goes back at the next GC). */
export function releaseNativePool(): void {
  pool.clear();
  pooledBytes = 0;
}
