/**
 * Two small WebAssembly SIMD loops that run directly on the tfjs wasm heap (they import the threaded
 * module's shared memory, so they read tensors in place, without copies):
 * - colsum: dst[k] += src[r, k] over rows, 4 columns at a time. The stock Sum kernel reduces at about
 *   1.2 G floats/s; batch-norm and bias gradients reduce activation-sized tensors 34 times per step.
 * - dwgrad: acc[t, k] += x[p + shift_t, k] * dy[p, k], the depthwise filter gradient's inner loop. The
 *   stock path for it is a scalar generic batched matmul. dwgrad9: the same for a 3x3 filter, sums in registers.
 * - rowscale / rowadd / rowsub: dst[r, k] = src[r, k] (*, +, -) v[k], the per-channel ops of bias, batch
 *   norm and their gradients; the stock broadcasting kernels take ~11 ms for a [1,1,1,32] x [32,75,75,32] product.
 * - rowaffine: dst[r, k] = (src[r, k] - m[k]) * a[k] + o[k], batch norm's forward pass.
 * - maxpool2x2: the 2x2 / stride 2 max-pool gradient over rows of windows, 4 channels at a time, with the
 *   cpu backend's tie rule (the first maximum in row-major order wins); maxpool2x2relu: the same through a ReLU's
 *   output, with that layer's mask and bias gradient.
 * - bnmoments / bnsums / bngrad: the fused training batch-norm (../fused/batchnorm.ts): its statistics in one pass;
 *   its gradient's two per-channel sums in one pass, then dx in one pass (bngradrelu: through a ReLU's output, with
 *   that layer's mask and bias gradient in the same pass).
 * - relugrad: ReLU's gradient, dy * step(x), in one pass instead of Step and Multiply; relugradsums: the same
 *   through a conv + bias + ReLU layer's output, with the bias's gradient (per-channel sums) in the same pass.
 * - adam: Adam's update of one variable in one pass (../fused/adam.ts), instead of 14 tensor ops.
 * Where the runtime has relaxed SIMD (browsers since Chrome 114; Node 20 once setup.ts turns its V8 flag on), the
 * filter gradient's multiply-adds are f32x4.relaxed_madd, one FMA instruction on x86 CPUs with FMA3: that loop is
 * bound by the multiply-add chain, and fusing the two halves its instructions (see hasRelaxedSimd).
 * No wasm toolchain is available at build time, so the module is assembled here (with assembler.ts);
 * both loops need a column count that is a multiple of 4 and are checked against the cpu backend in
 * tests/wasm-kernels*.test.ts.
 */

import { I32, V128, addInto, at, bump, eachRow, lanes, leb, loadAt, mulAdd, name, op, section, vec, whileBelow } from './assembler';
import { winogradBody, winogradFilterGradBody } from './winograd';

// colsum(src, dst, rows, colsBytes); locals r = 4, k = 5
function colsumBody(): number[] {
  const [src, dst, rows, colsBytes, r, k] = [0, 1, 2, 3, 4, 5];
  const inner = lanes(k, colsBytes, addInto(dst, k, loadAt(src, k)));
  return [...vec([[2, I32]]), ...eachRow(r, rows, k, inner, colsBytes, [src]), ...op.end];
}

// dwgrad(x, dy, acc, n, cBytes, shifts, taps); locals p = 7, t = 8, k = 9, xs = 10, a = 11
function dwgradBody(): number[] {
  const [x, dy, acc, n, cBytes, shifts, taps, p, t, k, xs, a] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const channels = lanes(k, cBytes, addInto(a, k, [...loadAt(xs, k), ...loadAt(dy, k), ...op.f32x4Mul]));
  const tapsLoop = whileBelow(t, taps, [
    ...op.get(x),
    ...op.get(shifts),
    ...op.get(t),
    ...op.i32(2),
    ...op.shl,
    ...op.add,
    ...op.load,
    ...op.add,
    ...op.set(xs),
    ...op.i32(0),
    ...op.set(k),
    ...channels,
    ...bump(a, { local: cBytes }),
    ...bump(t, 1),
  ]);
  const code = whileBelow(p, n, [
    ...op.i32(0),
    ...op.set(t),
    ...op.get(acc),
    ...op.set(a),
    ...tapsLoop,
    ...bump(x, { local: cBytes }),
    ...bump(dy, { local: cBytes }),
    ...bump(p, 1),
  ]);
  return [...vec([[5, I32]]), ...code, ...op.end];
}

/**
 * dwgrad for a 3x3 filter (nine taps): four channels at a time, the nine taps' sums stay in registers over the row's
 * pixels and are added into acc once, instead of a load and a store of acc for every multiply-add (block 2's
 * 32-channel filter gradient, 32x75x75, took 14.4 ms a step with dwgrad). Params (x, dy, acc, n, cBytes, shifts);
 * i32 locals k = 6, p = 7, xp = 8, dp = 9, the nine shifts 10-18; v128 locals: the sums 19-27, dy 28.
 */
function dwgrad9Body(fused: boolean): number[] {
  const [x, dy, acc, n, cBytes, shifts, k, p, xp, dp] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const taps = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const shift = (t: number) => 10 + t;
  const sum = (t: number) => 19 + t;
  const d = 28;
  const loadShifts = taps.flatMap((t) => [...op.get(shifts), ...op.loadAt(4 * t), ...op.set(shift(t))]);
  const pixel = [
    ...op.get(dp),
    ...op.v128Load,
    ...op.set(d),
    ...taps.flatMap((t) => [...mulAdd(fused, [...at(xp, shift(t)), ...op.v128Load], op.get(d), op.get(sum(t))), ...op.set(sum(t))]),
    ...bump(xp, { local: cBytes }),
    ...bump(dp, { local: cBytes }),
    ...bump(p, 1),
  ];
  // acc[t, k..k+4) += sum t, with xp walking acc's tap rows
  const addSums = [
    ...op.get(acc),
    ...op.set(xp),
    ...taps.flatMap((t) => [...addInto(xp, k, op.get(sum(t))), ...bump(xp, { local: cBytes })]),
  ];
  const channels = lanes(k, cBytes, [
    ...taps.flatMap((t) => [...op.v128Zero, ...op.set(sum(t))]),
    ...at(x, k),
    ...op.set(xp),
    ...at(dy, k),
    ...op.set(dp),
    ...op.i32(0),
    ...op.set(p),
    ...whileBelow(p, n, pixel),
    ...addSums,
  ]);
  return [
    ...vec([
      [13, I32],
      [10, V128],
    ]),
    ...loadShifts,
    ...op.i32(0),
    ...op.set(k),
    ...channels,
    ...op.end,
  ];
}

// convgrad(x, dy, acc, n, ciBytes, coBytes, offsets, rows); i32 locals r = 8, o = 9, p = 10, xa = 11, xb = 12,
// dp = 13, ap = 14, arow = 15, ra = 16, rb = 17; v128 locals: sums 18-25, dy 26-29, x 30-31
function convgradBody(fused: boolean): number[] {
  const [x, dy, acc, n, ciBytes, coBytes, offsets, rows, r, o, p, xa, xb, dp, ap, arow, ra, rb] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
  ];
  const sums = [18, 19, 20, 21, 22, 23, 24, 25]; // row r: 18-21, row r + 1: 22-25 (16 outputs each)
  const grads = [26, 27, 28, 29];
  const [va, vb] = [30, 31];
  // The sums of outputs o..o+15 of rows r and r+1, at ap and ap + coBytes.
  const sumAddress = (i: number) => (i < 4 ? op.get(ap) : [...op.get(ap), ...op.get(coBytes), ...op.add]);
  const loadSums = sums.flatMap((s, i) => [...sumAddress(i), ...op.v128LoadAt((i % 4) * 16), ...op.set(s)]);
  const storeSums = sums.flatMap((s, i) => [...sumAddress(i), ...op.get(s), ...op.v128StoreAt((i % 4) * 16)]);
  const multiplyAdd = (s: number, v: number, g: number) => [...mulAdd(fused, op.get(v), op.get(g), op.get(s)), ...op.set(s)];
  // x + offsets[row]: where a row's input value for the row's first pixel lies
  const rowInput = (row: number) => [
    ...op.get(x),
    ...op.get(offsets),
    ...op.get(row),
    ...op.i32(2),
    ...op.shl,
    ...op.add,
    ...op.load,
    ...op.add,
  ];
  const pixels = whileBelow(p, n, [
    ...grads.flatMap((g, i) => [...op.get(dp), ...op.v128LoadAt(i * 16), ...op.set(g)]),
    ...op.get(xa),
    ...op.splatAt(0),
    ...op.set(va),
    ...op.get(xb),
    ...op.splatAt(0),
    ...op.set(vb),
    ...grads.flatMap((g, i) => [...multiplyAdd(sums[i], va, g), ...multiplyAdd(sums[i + 4], vb, g)]),
    ...bump(xa, { local: ciBytes }),
    ...bump(xb, { local: ciBytes }),
    ...bump(dp, { local: coBytes }),
    ...bump(p, 1),
  ]);
  const outputBlocks = whileBelow(o, coBytes, [
    ...at(arow, o),
    ...op.set(ap),
    ...loadSums,
    ...rowInput(ra),
    ...op.set(xa),
    ...rowInput(rb),
    ...op.set(xb),
    ...at(dy, o),
    ...op.set(dp),
    ...op.i32(0),
    ...op.set(p),
    ...pixels,
    ...storeSums,
    ...bump(o, 64),
  ]);
  const rowPairs = whileBelow(r, rows, [
    ...op.get(r),
    ...op.set(ra),
    ...op.get(r),
    ...op.i32(1),
    ...op.add,
    ...op.set(rb),
    ...op.i32(0),
    ...op.set(o),
    ...outputBlocks,
    ...bump(arow, { local: coBytes }),
    ...bump(arow, { local: coBytes }),
    ...bump(r, 2),
  ]);
  return [
    ...vec([
      [10, I32],
      [14, V128],
    ]),
    ...op.get(acc),
    ...op.set(arow),
    ...rowPairs,
    ...op.end,
  ];
}

/**
 * The locals of the 2x2 max-pool gradient loops that windowRow uses: xRow, dyRow, outRow (moved on a window at a
 * time), outW, cBytes, rowBytes, c2 (2 cBytes, set before), the counters ox and k, a and o (the window's x and out
 * at k), and the v128s best, w1-w3 and g.
 */
type PoolLocals = Record<'xRow' | 'dyRow' | 'outRow' | 'outW' | 'cBytes' | 'rowBytes' | 'c2' | 'ox' | 'k' | 'a' | 'o', number> &
  Record<'best' | 'w1' | 'w2' | 'w3' | 'g', number>;

/**
 * A row of outW windows, four channels at a time: each tap's share of the window's dy, pushed and handed to
 * write(share, ...the tap's offsets from a and o) in row-major order, then `perLanes`. The last tap that beat every
 * earlier one gets dy (the first maximum wins, as on cpu), the others zero.
 */
function windowRow(l: PoolLocals, write: (share: number[], ...offsets: number[]) => number[], perLanes: number[] = []): number[] {
  const { xRow, dyRow, outRow, outW, cBytes, rowBytes, c2, ox, k, a, o, best, w1, w2, w3, g } = l;
  const load = (...offsets: number[]) => [...at(a, ...offsets), ...op.v128Load];
  // w = x[offsets] > best; best = w ? x[offsets] : best
  const challenge = (w: number, ...offsets: number[]) => [
    ...load(...offsets),
    ...op.get(best),
    ...op.f32x4Gt,
    ...op.set(w),
    ...load(...offsets),
    ...op.get(best),
    ...op.get(w),
    ...op.bitselect,
    ...op.set(best),
  ];
  const shares = [
    ...at(xRow, k),
    ...op.set(a),
    ...at(outRow, k),
    ...op.set(o),
    ...load(),
    ...op.set(best),
    ...challenge(w1, cBytes),
    ...challenge(w2, rowBytes),
    ...load(rowBytes, cBytes),
    ...op.get(best),
    ...op.f32x4Gt,
    ...op.set(w3),
    ...loadAt(dyRow, k),
    ...op.set(g),
    ...write([...op.get(g), ...op.get(w1), ...op.get(w2), ...op.or, ...op.get(w3), ...op.or, ...op.andNot]),
    ...write([...op.get(g), ...op.get(w1), ...op.and, ...op.get(w2), ...op.get(w3), ...op.or, ...op.andNot], cBytes),
    ...write([...op.get(g), ...op.get(w2), ...op.and, ...op.get(w3), ...op.andNot], rowBytes),
    ...write([...op.get(g), ...op.get(w3), ...op.and], rowBytes, cBytes),
  ];
  return whileBelow(ox, outW, [
    ...op.i32(0),
    ...op.set(k),
    ...lanes(k, cBytes, [...shares, ...perLanes]),
    ...bump(xRow, { local: c2 }),
    ...bump(outRow, { local: c2 }),
    ...bump(dyRow, { local: cBytes }),
    ...bump(ox, 1),
  ]);
}

/** `count` consecutive indices from `first`: parameters and locals placed after optional ones. */
const indicesFrom = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + i);

/**
 * The 2x2 / 2 max-pool gradient over `rows` rows of windows, each two input rows on from the last (maxpool2x2). With
 * `relu` (maxpool2x2relu), through a ReLU's output x: every tap's gradient times step(x), ReluGrad's values, and
 * acc[k] += the four taps' sum, so the conv + ReLU layer before needs no mask pass of its own (MAX_POOL_GRAD_RELU).
 * Params (xRow, dyRow, outRow, [acc,] rows, outW, cBytes, rowBytes); then i32 locals r, ox, k, a, o, c2 and v128
 * locals best, w1, w2, w3, g and, with `relu`, zero (never written), one, s, total.
 */
function maxpoolBody(relu: boolean): number[] {
  const [xRow, dyRow, outRow, acc] = [0, 1, 2, 3];
  const [rows, outW, cBytes, rowBytes, r, ox, k, a, o, c2] = indicesFrom(relu ? 4 : 3, 10);
  const [best, w1, w2, w3, g, zero, one, s, total] = indicesFrom(c2 + 1, 9);
  const locals = { xRow, dyRow, outRow, outW, cBytes, rowBytes, c2, ox, k, a, o, best, w1, w2, w3, g };
  const store = (value: number[], ...offsets: number[]) => [...at(o, ...offsets), ...value, ...op.v128Store];
  // Each tap's share times step(x there), stored and added into total (the first tap's sets it).
  const masked = (share: number[], ...offsets: number[]) => [
    ...stepInto(s, [...at(a, ...offsets), ...op.v128Load], zero, one),
    ...share,
    ...op.get(s),
    ...op.f32x4Mul,
    ...op.set(s),
    ...at(o, ...offsets),
    ...op.get(s),
    ...op.v128Store,
    ...(offsets.length === 0 ? op.get(s) : [...op.get(total), ...op.get(s), ...op.f32x4Add]),
    ...op.set(total),
  ];
  const windows = relu ? windowRow(locals, masked, addInto(acc, k, op.get(total))) : windowRow(locals, store);
  // A row of windows moves xRow and outRow on by outW windows: back by those, then down two input rows. dyRow is
  // where the next row's dy starts.
  const rowsLoop = whileBelow(r, rows, [
    ...op.i32(0),
    ...op.set(ox),
    ...windows,
    ...[xRow, outRow].flatMap((p) => [
      ...op.get(p),
      ...op.get(rowBytes),
      ...op.get(rowBytes),
      ...op.add,
      ...op.get(outW),
      ...op.get(c2),
      ...op.mul,
      ...op.sub,
      ...op.add,
      ...op.set(p),
    ]),
    ...bump(r, 1),
  ]);
  return [
    ...vec([
      [6, I32],
      [relu ? 9 : 5, V128],
    ]),
    ...(relu ? [...op.f32x4Const(1), ...op.set(one)] : []),
    ...op.get(cBytes),
    ...op.get(cBytes),
    ...op.add,
    ...op.set(c2),
    ...rowsLoop,
    ...op.end,
  ];
}

/** dst[r, k] = src[r, k] (op) v[k]: rowscale, rowadd, rowsub. Params (src, v, dst, rows, colsBytes); locals r = 5, k = 6. */
function rowBinaryBody(vectorOp: number[]): number[] {
  const [src, v, dst, rows, colsBytes, r, k] = [0, 1, 2, 3, 4, 5, 6];
  const inner = lanes(k, colsBytes, [...at(dst, k), ...loadAt(src, k), ...loadAt(v, k), ...vectorOp, ...op.v128Store]);
  return [...vec([[2, I32]]), ...eachRow(r, rows, k, inner, colsBytes, [src, dst]), ...op.end];
}

/** dst[r, k] = (src[r, k] - m[k]) * a[k] + o[k]. Params (src, m, a, o, dst, rows, colsBytes); locals r = 7, k = 8. */
function rowAffineBody(): number[] {
  const [src, m, a, o, dst, rows, colsBytes, r, k] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const inner = lanes(k, colsBytes, [
    ...at(dst, k),
    ...loadAt(src, k),
    ...loadAt(m, k),
    ...op.f32x4Sub,
    ...loadAt(a, k),
    ...op.f32x4Mul,
    ...loadAt(o, k),
    ...op.f32x4Add,
    ...op.v128Store,
  ]);
  return [...vec([[2, I32]]), ...eachRow(r, rows, k, inner, colsBytes, [src, dst]), ...op.end];
}

/**
 * Batch norm's gradient sums: s1[k] += dy[r, k], s2[k] += dy[r, k] * (x[r, k] - m[k]).
 * Params (dy, x, m, s1, s2, rows, colsBytes); locals r = 7, k = 8.
 */
function bnSumsBody(): number[] {
  const [dy, x, m, s1, s2, rows, colsBytes, r, k] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const inner = lanes(k, colsBytes, [
    ...addInto(s1, k, loadAt(dy, k)),
    ...addInto(s2, k, [...loadAt(dy, k), ...loadAt(x, k), ...loadAt(m, k), ...op.f32x4Sub, ...op.f32x4Mul]),
  ]);
  return [...vec([[2, I32]]), ...eachRow(r, rows, k, inner, colsBytes, [dy, x]), ...op.end];
}

/**
 * Batch norm's statistics around a per-channel shift: with d = x[r, k] - shift[k], s1[k] += d and s2[k] += d * d.
 * Params (x, shift, s1, s2, rows, colsBytes); i32 locals r = 6, k = 7; v128 local d = 8.
 */
function bnMomentsBody(): number[] {
  const [x, shift, s1, s2, rows, colsBytes, r, k, d] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const inner = lanes(k, colsBytes, [
    ...loadAt(x, k),
    ...loadAt(shift, k),
    ...op.f32x4Sub,
    ...op.set(d),
    ...addInto(s1, k, op.get(d)),
    ...addInto(s2, k, [...op.get(d), ...op.get(d), ...op.f32x4Mul]),
  ]);
  return [
    ...vec([
      [2, I32],
      [1, V128],
    ]),
    ...eachRow(r, rows, k, inner, colsBytes, [x]),
    ...op.end,
  ];
}

/**
 * Batch norm's input gradient: dst[r, k] = dy[r, k] * a[k] + (x[r, k] - m[k]) * b[k] + c[k], with a, b and c one
 * after the other from coef (a row's bytes apart). `relu` (bngradrelu): x is a ReLU's output, and the value is also
 * multiplied by step(x) and added into acc[k] (the ReLU layer's mask and bias gradient, BATCH_NORM_TRAIN_GRAD_RELU).
 * Params (dy, x, m, coef, dst, [acc,] rows, colsBytes); then i32 locals r, k and, with `relu`, v128 locals zero
 * (never written), one, s.
 */
function bnGradBody(relu: boolean): number[] {
  const [dy, x, m, coef, dst] = [0, 1, 2, 3, 4];
  const acc = 5; // with `relu` only
  const [rows, colsBytes, r, k, zero, one, s] = indicesFrom(relu ? 6 : 5, 7);
  const coefficient = (...rowsOn: number[]) => [...at(coef, ...rowsOn, k), ...op.v128Load];
  const value = [
    ...loadAt(dy, k),
    ...coefficient(),
    ...op.f32x4Mul,
    ...loadAt(x, k),
    ...loadAt(m, k),
    ...op.f32x4Sub,
    ...coefficient(colsBytes),
    ...op.f32x4Mul,
    ...op.f32x4Add,
    ...coefficient(colsBytes, colsBytes),
    ...op.f32x4Add,
  ];
  const advance = [dy, x, dst];
  if (relu) return maskedSumsBody({ rows, colsBytes, r, k, zero, one, s, mask: x, dst, acc }, value, advance);
  const inner = lanes(k, colsBytes, [...at(dst, k), ...value, ...op.v128Store]);
  return [...vec([[2, I32]]), ...eachRow(r, rows, k, inner, colsBytes, advance), ...op.end];
}

/**
 * The body of a pass through a ReLU's output `mask`: dst[r, k] = value * step(mask[r, k]) and acc[k] += dst[r, k],
 * `value` pushing row r's 4 floats at k, then each pointer in `advance` moves on a row. The i32 locals r, k and the
 * v128 locals zero (never written), one and s, in this order, are the locals it declares.
 */
function maskedSumsBody(
  l: Record<'rows' | 'colsBytes' | 'r' | 'k' | 'zero' | 'one' | 's' | 'mask' | 'dst' | 'acc', number>,
  value: number[],
  advance: number[],
): number[] {
  const { rows, colsBytes, r, k, zero, one, s, mask, dst, acc } = l;
  const inner = lanes(k, colsBytes, [
    ...stepInto(s, loadAt(mask, k), zero, one),
    ...value,
    ...op.get(s),
    ...op.f32x4Mul,
    ...op.set(s),
    ...at(dst, k),
    ...op.get(s),
    ...op.v128Store,
    ...addInto(acc, k, op.get(s)),
  ]);
  return [
    ...vec([
      [2, I32],
      [3, V128],
    ]),
    ...op.f32x4Const(1),
    ...op.set(one),
    ...eachRow(r, rows, k, inner, colsBytes, advance),
    ...op.end,
  ];
}

/**
 * s = step(x) for the 4 floats `loadX` pushes: 1 where x > 0, 0 where not, x itself where x is NaN (the cpu
 * backend's Step). `zero` and `one` are v128 locals holding 0 and 1 in every lane. x is loaded once, into s, not
 * once per use (V8 does not merge the repeated loads).
 */
function stepInto(s: number, loadX: number[], zero: number, one: number): number[] {
  return [
    ...loadX,
    ...op.set(s),
    // bitselect(x, x > 0 ? 1 : 0, x != x): NaN lanes take x (a NaN) as their step
    ...op.get(s),
    ...op.get(s),
    ...op.get(zero),
    ...op.f32x4Gt,
    ...op.get(one),
    ...op.and,
    ...op.get(s),
    ...op.get(s),
    ...op.f32x4Ne,
    ...op.bitselect,
    ...op.set(s),
  ];
}

/**
 * ReLU's gradient: dst[i] = dy[i] * step(x[i]), 4 floats at a time. Params (dy, x, dst, bytes); i32 local k = 4;
 * v128 locals zero = 5 (never written), one = 6, s = 7.
 */
function reluGradBody(): number[] {
  const [dy, x, dst, bytes, k, zero, one, s] = [0, 1, 2, 3, 4, 5, 6, 7];
  const inner = lanes(k, bytes, [
    ...stepInto(s, loadAt(x, k), zero, one),
    ...at(dst, k),
    ...loadAt(dy, k),
    ...op.get(s),
    ...op.f32x4Mul,
    ...op.v128Store,
  ]);
  return [
    ...vec([
      [1, I32],
      [3, V128],
    ]),
    ...op.f32x4Const(1),
    ...op.set(one),
    ...op.i32(0),
    ...op.set(k),
    ...inner,
    ...op.end,
  ];
}

/**
 * A conv + bias + ReLU layer's gradient through its output y: dst[r, k] = dy[r, k] * step(y[r, k]) and
 * acc[k] += dst[r, k] (the bias's gradient) in one pass. Params (dy, y, dst, acc, rows, colsBytes); i32 locals
 * r = 6, k = 7; v128 locals zero = 8 (never written), one = 9, s = 10.
 */
function reluGradSumsBody(): number[] {
  const [dy, y, dst, acc, rows, colsBytes, r, k, zero, one, s] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  return maskedSumsBody({ rows, colsBytes, r, k, zero, one, s, mask: y, dst, acc }, loadAt(dy, k), [dy, y, dst]);
}

/**
 * Adam's update, in tfjs's order of float32 operations: m' = m b1 + g (1 - b1), v' = v b2 + g^2 (1 - b2),
 * w' = (m' / c1) / (sqrt(v' / c2) + eps) (-lr) + w. Params (w, g, m, v, wOut, mOut, vOut, bytes, p) with p the 8
 * float32 parameters [b1, 1-b1, b2, 1-b2, c1, c2, eps, -lr]; i32 local k = 9; v128 locals: the parameters 10-17,
 * m' = 18, v' = 19.
 */
function adamBody(): number[] {
  const [w, g, m, v, wOut, mOut, vOut, bytes, p, k] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [b1, omb1, b2, omb2, c1, c2, eps, negLr, nm, nv] = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19];
  const params = [b1, omb1, b2, omb2, c1, c2, eps, negLr].flatMap((local, i) => [...op.get(p), ...op.splatAt(i * 4), ...op.set(local)]);
  const inner = lanes(k, bytes, [
    ...loadAt(m, k),
    ...op.get(b1),
    ...op.f32x4Mul,
    ...loadAt(g, k),
    ...op.get(omb1),
    ...op.f32x4Mul,
    ...op.f32x4Add,
    ...op.set(nm),
    ...loadAt(v, k),
    ...op.get(b2),
    ...op.f32x4Mul,
    ...loadAt(g, k),
    ...loadAt(g, k),
    ...op.f32x4Mul,
    ...op.get(omb2),
    ...op.f32x4Mul,
    ...op.f32x4Add,
    ...op.set(nv),
    ...at(mOut, k),
    ...op.get(nm),
    ...op.v128Store,
    ...at(vOut, k),
    ...op.get(nv),
    ...op.v128Store,
    ...at(wOut, k),
    ...op.get(nm),
    ...op.get(c1),
    ...op.f32x4Div,
    ...op.get(nv),
    ...op.get(c2),
    ...op.f32x4Div,
    ...op.f32x4Sqrt,
    ...op.get(eps),
    ...op.f32x4Add,
    ...op.f32x4Div,
    ...op.get(negLr),
    ...op.f32x4Mul,
    ...loadAt(w, k),
    ...op.f32x4Add,
    ...op.v128Store,
  ]);
  return [
    ...vec([
      [1, I32],
      [10, V128],
    ]),
    ...params,
    ...op.i32(0),
    ...op.set(k),
    ...inner,
    ...op.end,
  ];
}

/**
 * The loops' module; `shared`: it imports a shared memory (the threaded backend's); `fused`: its filter-gradient
 * loop uses relaxed SIMD's multiply-add (by default where this runtime validates it).
 */
export function simdModuleBytes(shared: boolean, fused = hasRelaxedSimd()): Uint8Array {
  const params = (n: number) => [0x60, ...vec(new Array<number[]>(n).fill([I32])), 0];
  const types = [4, 7, 6, 5, 8, 9]; // the functions' parameter counts, in the type section's order
  const memoryLimits = shared ? [0x03, ...leb(1), ...leb(65536)] : [0x00, ...leb(1)];
  // [export name, parameter count, body], in function-index order
  const functions: Array<[string, number, number[]]> = [
    ['colsum', 4, colsumBody()],
    ['dwgrad', 7, dwgradBody()],
    ['dwgrad9', 6, dwgrad9Body(fused)],
    ['maxpool2x2', 7, maxpoolBody(false)],
    ['maxpool2x2relu', 8, maxpoolBody(true)],
    ['rowscale', 5, rowBinaryBody(op.f32x4Mul)],
    ['rowadd', 5, rowBinaryBody(op.f32x4Add)],
    ['rowsub', 5, rowBinaryBody(op.f32x4Sub)],
    ['rowaffine', 7, rowAffineBody()],
    ['convgrad', 8, convgradBody(fused)],
    ['bnsums', 7, bnSumsBody()],
    ['bngrad', 7, bnGradBody(false)],
    ['bngradrelu', 8, bnGradBody(true)],
    ['relugrad', 4, reluGradBody()],
    ['relugradsums', 6, reluGradSumsBody()],
    ['adam', 9, adamBody()],
    ['bnmoments', 6, bnMomentsBody()],
    ['winograd', 9, winogradBody(false, fused)],
    ['winogradrelu', 9, winogradBody(true, fused)],
  ];
  functions.push([
    'winogradfilter',
    9,
    winogradFilterGradBody(
      fused,
      functions.findIndex(([n]) => n === 'convgrad'),
    ),
  ]);
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec(types.map(params))),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...memoryLimits]])),
    ...section(3, vec(functions.map(([, n]) => leb(types.indexOf(n))))),
    ...section(7, vec(functions.map(([fn], i) => [...name(fn), 0x00, ...leb(i)]))),
    ...section(10, vec(functions.map(([, , body]) => [...leb(body.length), ...body]))),
  ]);
}

/**
 * winograd.ts's loops over rows of tiles: (x, then three arguments of the loop's own, this thread's scratch, firstRow,
 * count, tilesW, tilesH); see winogradBody and winogradFilterGradBody.
 */
type TileRowLoop = (
  x: number,
  a: number,
  b: number,
  c: number,
  scratch: number,
  firstRow: number,
  count: number,
  tilesW: number,
  tilesH: number,
) => void;

export interface SimdLoops {
  /** dst[k] += src[r*cols + k] for r < rows, k < cols; byte addresses; cols % 4 === 0. */
  colsum(srcByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /** acc[t*c + k] += x[shift_t + p*c + k] * dy[p*c + k] for p < n; shifts (bytes, i32) at shiftsByte; c % 4 === 0. */
  dwgrad(xByte: number, dyByte: number, accByte: number, n: number, cBytes: number, shiftsByte: number, taps: number): void;
  /** dwgrad with taps = 9 (a 3x3 filter), its sums in registers over the row (dwgrad9Body). */
  dwgrad9(xByte: number, dyByte: number, accByte: number, n: number, cBytes: number, shiftsByte: number): void;
  /** dst[r*cols + k] = src[r*cols + k] * v[k]; cols % 4 === 0. */
  rowscale(srcByte: number, vByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /** dst[r*cols + k] = src[r*cols + k] + v[k]; cols % 4 === 0. */
  rowadd(srcByte: number, vByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /** dst[r*cols + k] = src[r*cols + k] - v[k]; cols % 4 === 0. */
  rowsub(srcByte: number, vByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /** dst[r*cols + k] = (src[r*cols + k] - m[k]) * a[k] + o[k]; cols % 4 === 0. */
  rowaffine(srcByte: number, mByte: number, aByte: number, oByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /**
   * One output row of a dense filter gradient: acc[r*co + o] += x[offset_r + p*ci] * dy[p*co + o] for p < n, every
   * row r < rows and output channel o, where row r is one (tap, input channel) pair and offset_r (bytes, i32, at
   * offsetsByte) is where its input value for the row's first pixel lies. rows % 2 === 0, co % 16 === 0: two rows by 16
   * outputs are 8 vector sums, which stay in registers over the row's pixels.
   */
  convgrad(
    xByte: number,
    dyByte: number,
    accByte: number,
    n: number,
    ciBytes: number,
    coBytes: number,
    offsetsByte: number,
    rows: number,
  ): void;
  /**
   * `rows` rows of windows of the 2x2 / stride 2 max-pool gradient, each two input rows on from the last: writes
   * all four inputs of each of the `outW` windows a row (x and out share a layout with `rowBytes` per input row);
   * c % 4 === 0.
   */
  maxpool2x2(xRowByte: number, dyRowByte: number, outRowByte: number, rows: number, outW: number, cBytes: number, rowBytes: number): void;
  /**
   * maxpool2x2 through a ReLU's output x: each input's gradient times step(x), and acc[k] += their per-channel
   * sums (maxpoolBody).
   */
  maxpool2x2relu(
    xRowByte: number,
    dyRowByte: number,
    outRowByte: number,
    accByte: number,
    rows: number,
    outW: number,
    cBytes: number,
    rowBytes: number,
  ): void;
  /** s1[k] += dy[r*cols + k], s2[k] += dy[r*cols + k] * (x[r*cols + k] - m[k]) for r < rows; cols % 4 === 0. */
  bnsums(dyByte: number, xByte: number, mByte: number, s1Byte: number, s2Byte: number, rows: number, colsBytes: number): void;
  /**
   * dst[r*cols + k] = dy[r*cols + k] * a[k] + (x[r*cols + k] - m[k]) * b[k] + c[k], with a, b, c at coef, coef +
   * colsBytes, coef + 2 colsBytes; cols % 4 === 0.
   */
  bngrad(dyByte: number, xByte: number, mByte: number, coefByte: number, dstByte: number, rows: number, colsBytes: number): void;
  /** bngrad's value times step(x[r*cols + k]) in dst, and acc[k] += it; cols % 4 === 0. */
  bngradrelu(
    dyByte: number,
    xByte: number,
    mByte: number,
    coefByte: number,
    dstByte: number,
    accByte: number,
    rows: number,
    colsBytes: number,
  ): void;
  /** dst[i] = dy[i] * step(x[i]) for the first bytes / 4 floats; bytes % 16 === 0. */
  relugrad(dyByte: number, xByte: number, dstByte: number, bytes: number): void;
  /** dst[r*cols + k] = dy[r*cols + k] * step(y[r*cols + k]) and acc[k] += dst[r*cols + k] for r < rows; cols % 4 === 0. */
  relugradsums(dyByte: number, yByte: number, dstByte: number, accByte: number, rows: number, colsBytes: number): void;
  /** With d = x[r*cols + k] - shift[k]: s1[k] += d, s2[k] += d * d for r < rows; cols % 4 === 0. */
  bnmoments(xByte: number, shiftByte: number, s1Byte: number, s2Byte: number, rows: number, colsBytes: number): void;
  /** winograd.ts's filter gradient of a 16 -> 16 channel 3x3 convolution over rows of tiles (winogradFilterGradBody). */
  winogradfilter: TileRowLoop;
  /** winograd.ts's 16 -> 16 channel 3x3 convolution over rows of tiles (see winogradBody); winogradrelu adds ReLU. */
  winograd: TileRowLoop;
  winogradrelu: TileRowLoop;
  /** Adam's update of the first bytes / 4 values (bytes % 16 === 0); p: 8 float32 parameters (see adamBody). */
  adam(
    wByte: number,
    gByte: number,
    mByte: number,
    vByte: number,
    wOutByte: number,
    mOutByte: number,
    vOutByte: number,
    bytes: number,
    pByte: number,
  ): void;
}

/** A module whose one function returns f32x4.relaxed_madd of three zero vectors: valid only with relaxed SIMD. */
function relaxedSimdProbe(): Uint8Array {
  const body = [0, ...op.v128Zero, ...op.v128Zero, ...op.v128Zero, ...op.f32x4RelaxedMadd, ...op.end];
  const header = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  return Uint8Array.from([
    ...header,
    ...section(1, vec([[0x60, 0, ...vec([[V128]])]])),
    ...section(3, vec([[0]])),
    ...section(10, vec([[...leb(body.length), ...body]])),
  ]);
}

/**
 * Whether this runtime compiles relaxed SIMD, asked anew each time: Node 20 has it only behind a V8 flag, which
 * setup.ts may turn on after this module loaded. PNEUMO_WASM_FMA=0 keeps the plain multiply-then-add loops.
 */
export function hasRelaxedSimd(): boolean {
  if (typeof process !== 'undefined' && process.env?.PNEUMO_WASM_FMA === '0') return false;
  return WebAssembly.validate(relaxedSimdProbe());
}

const instances = new WeakMap<WebAssembly.Memory, SimdLoops>();

/** The loops bound to `memory`; undefined where this runtime cannot compile them (no wasm SIMD). */
export function simdLoops(memory: WebAssembly.Memory | undefined): SimdLoops | undefined {
  if (!memory) return undefined;
  const cached = instances.get(memory);
  if (cached) return cached;
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const bytes = simdModuleBytes(shared);
  if (!WebAssembly.validate(bytes)) return undefined;
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } });
  const loops = instance.exports as unknown as SimdLoops;
  instances.set(memory, loops);
  return loops;
}
