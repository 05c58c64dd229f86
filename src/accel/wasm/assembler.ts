/**
 * A small WebAssembly assembler: the binary format's encodings, the opcodes our SIMD loops use, and the loop and
 * address patterns they share (locals by index, byte addresses). No wasm toolchain is available at build time, so
 * simd.ts and winograd.ts write their functions with these.
 */

/** Unsigned LEB128, the wasm binary format's integer encoding. */
export function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128, what i32.const takes: 64 needs two bytes (a single 0x40 would read as -64). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

export function vec(items: number[][]): number[] {
  return [...leb(items.length), ...items.flat()];
}

export function section(id: number, body: number[]): number[] {
  return [id, ...leb(body.length), ...body];
}

export function name(s: string): number[] {
  const bytes = [...Buffer.from(s, 'utf8')];
  return [...leb(bytes.length), ...bytes];
}

export const I32 = 0x7f;
export const V128 = 0x7b;
export const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  else: [0x05],
  end: [0x0b],
  br: (l: number) => [0x0c, l],
  call: (f: number) => [0x10, ...leb(f)],
  brIf: (l: number) => [0x0d, l],
  get: (i: number) => [0x20, i],
  set: (i: number) => [0x21, i],
  i32: (v: number) => [0x41, ...sleb(v)],
  add: [0x6a],
  sub: [0x6b],
  mul: [0x6c],
  divU: [0x6e],
  andI32: [0x71],
  shl: [0x74],
  eqz: [0x45],
  eq: [0x46],
  ltU: [0x49],
  geU: [0x4f],
  /** memory.copy(dst, src, bytes) and memory.fill(dst, byte, bytes) from the code that pushes each operand */
  memoryCopy: (dst: number[], src: number[], bytes: number[]) => [...dst, ...src, ...bytes, 0xfc, 0x0a, 0x00, 0x00],
  memoryFill: (dst: number[], value: number[], bytes: number[]) => [...dst, ...value, ...bytes, 0xfc, 0x0b, 0x00],
  load: [0x28, 2, 0],
  /** i32.load with a constant byte offset folded into the instruction. */
  loadAt: (offset: number) => [0x28, 2, ...leb(offset)],
  v128Load: [0xfd, 0x00, 2, 0], // alignment hint 4 bytes: float arrays are only 4-byte aligned
  v128Store: [0xfd, 0x0b, 2, 0],
  /** v128.load / v128.store / v128.load32_splat with a constant byte offset folded into the instruction. */
  v128LoadAt: (offset: number) => [0xfd, 0x00, 2, ...leb(offset)],
  v128StoreAt: (offset: number) => [0xfd, 0x0b, 2, ...leb(offset)],
  splatAt: (offset: number) => [0xfd, 0x09, 2, ...leb(offset)],
  f32x4Add: [0xfd, 0xe4, 0x01],
  f32x4Sub: [0xfd, 0xe5, 0x01],
  f32x4Neg: [0xfd, 0xe1, 0x01],
  f32x4Mul: [0xfd, 0xe6, 0x01],
  /** relaxed SIMD's a * b + c, fused or not as the CPU does it fastest */
  f32x4RelaxedMadd: [0xfd, 0x85, 0x02],
  f32x4Div: [0xfd, 0xe7, 0x01],
  /** lane-wise maximum; NaN where either lane is NaN */
  f32x4Max: [0xfd, 0xe9, 0x01],
  v128Zero: [0xfd, 0x0c, ...new Array<number>(16).fill(0)],
  f32x4Sqrt: [0xfd, 0xe3, 0x01],
  f32x4Ne: [0xfd, 0x42],
  f32x4Gt: [0xfd, 0x44],
  /** f32x4.splat of an f32 constant */
  f32x4Const: (v: number) => [0x43, ...new Uint8Array(Float32Array.of(v).buffer), 0xfd, 0x13],
  and: [0xfd, 0x4e],
  andNot: [0xfd, 0x4f],
  or: [0xfd, 0x50],
  bitselect: [0xfd, 0x52],
};

/** a * b + c from the code that pushes each: one relaxed multiply-add where `fused`, else a multiply then an add. */
export function mulAdd(fused: boolean, a: number[], b: number[], c: number[]): number[] {
  return fused ? [...a, ...b, ...c, ...op.f32x4RelaxedMadd] : [...c, ...a, ...b, ...op.f32x4Mul, ...op.f32x4Add];
}

/** i += step */
export function bump(local: number, step: number | { local: number }): number[] {
  const by = typeof step === 'number' ? op.i32(step) : op.get(step.local);
  return [...op.get(local), ...by, ...op.add, ...op.set(local)];
}

/** while (counter < limit) { body; } with the loop's break at depth 1. */
export function whileBelow(counter: number, limit: number, body: number[]): number[] {
  return [
    ...op.block,
    ...op.loop,
    ...op.get(counter),
    ...op.get(limit),
    ...op.geU,
    ...op.brIf(1),
    ...body,
    ...op.br(0),
    ...op.end,
    ...op.end,
  ];
}

/** The address base + offsets (locals holding byte counts). */
export function at(base: number, ...offsets: number[]): number[] {
  return [...op.get(base), ...offsets.flatMap((l) => [...op.get(l), ...op.add])];
}

/** while (k < bytes) { body; k += 16 }: a row's columns, 4 floats at a time (the caller sets k first). */
export function lanes(k: number, bytes: number, body: number[]): number[] {
  return whileBelow(k, bytes, [...body, ...bump(k, 16)]);
}

/** base[k..k+4) += the 4 floats that `value` pushes: the accumulate step of the sum loops. */
export function addInto(base: number, k: number, value: number[]): number[] {
  return [...at(base, k), ...at(base, k), ...op.v128Load, ...value, ...op.f32x4Add, ...op.v128Store];
}

/** The 4 floats at base + k. */
export function loadAt(base: number, k: number): number[] {
  return [...at(base, k), ...op.v128Load];
}

/** For each of `rows` rows (counter r): k = 0, `perRow`, then each pointer in `advance` moves on by rowBytes. */
export function eachRow(r: number, rows: number, k: number, perRow: number[], rowBytes: number, advance: number[]): number[] {
  return whileBelow(r, rows, [
    ...op.i32(0),
    ...op.set(k),
    ...perRow,
    ...advance.flatMap((p) => bump(p, { local: rowBytes })),
    ...bump(r, 1),
  ]);
}
