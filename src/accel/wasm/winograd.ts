/**
 * Block 1's 16 -> 16 convolution on wasm with Winograd's F(2x2, 3x3): 2.25 times fewer multiply-adds than the
 * direct convolution, for the forward pass (bias and ReLU included), the input gradient and the filter gradient of
 * a 3x3, stride-1, 'same' convolution with 16 input and 16 output channels. The direct loops ran each of them at
 * about the arithmetic limit of 128-bit SIMD: XNNPACK's forward pass and input gradient 56-58 ms for 32x150x150x16
 * on a 2-core Xeon, our filter gradient 55 ms, together 30% of a wasm training step; here they take 23-24, 23-24
 * and 33 ms.
 *
 * Each 2x2 block of outputs (a tile) comes from the 4x4 input pixels around it: V = Bᵀ d B per channel, then 16
 * small products M[ξ] = V[ξ] · U[ξ] (U = G g Gᵀ, the filter transformed once per call, here in JavaScript), then
 * the outputs Aᵀ M A. One call of the wasm loop runs whole rows of tiles: it transforms a row's inputs into scratch,
 * multiplies them two tiles at a time (8 vector sums in registers, as the filter gradient's loop), and writes the
 * row's outputs, so the transformed data stays in cache. The filter gradient is the same algorithm transposed (see
 * winogradFilterGradBody). Rows of tiles are split with the helper thread as the other row loops are.
 */
import type { TensorInfo, backend_util } from '@tensorflow/tfjs';
import { I32, V128, bump, mulAdd, op, vec, whileBelow } from './assembler';
import { type WasmBackend, allocate, byteOffset, release, runRows, view } from './heap';
import type { RowCall } from './row-jobs';
import type { SimdLoops } from './simd';

/** Channels in and out: the only geometry the loop is written for (block 1 of the seed model). */
const WINOGRAD_CHANNELS = 16;
/** Bytes of one pixel's 16 channels. */
const PIXEL = 4 * WINOGRAD_CHANNELS;
/** Floats of the transformed filter: U[ξ][ci][co], 16 x 16 x 16. */
const WINOGRAD_FILTER_FLOATS = 16 * WINOGRAD_CHANNELS * WINOGRAD_CHANNELS;

/** Whether a convolution's geometry is the one the Winograd loop takes. */
export function winogradFits(g: backend_util.Conv2DInfo): boolean {
  return (
    g.inChannels === WINOGRAD_CHANNELS &&
    g.outChannels === WINOGRAD_CHANNELS &&
    g.filterHeight === 3 &&
    g.filterWidth === 3 &&
    g.strideHeight === 1 &&
    g.strideWidth === 1 &&
    g.dilationHeight === 1 &&
    g.dilationWidth === 1 &&
    g.padInfo.top === 1 &&
    g.padInfo.left === 1 &&
    g.outHeight === g.inHeight &&
    g.outWidth === g.inWidth &&
    g.inHeight % 2 === 0 &&
    g.inWidth % 2 === 0 &&
    g.inWidth >= 4
  );
}

/**
 * U = G g Gᵀ for each (ci, co) of a 3x3 HWIO filter with 16 x 16 channels, as U[ξ][ci][co] (ξ = 4i + j).
 * `flipped`: the filter of the input gradient instead, g'[a][b][co][ci] = g[2-a][2-b][ci][co] (the forward
 * filter turned by 180 degrees with its channels swapped).
 */
export function winogradFilter(w: Float32Array, flipped: boolean): Float32Array {
  const C = WINOGRAD_CHANNELS;
  const u = new Float32Array(WINOGRAD_FILTER_FLOATS);
  const g = new Float64Array(9);
  const t = new Float64Array(12);
  for (let ci = 0; ci < C; ci++)
    for (let co = 0; co < C; co++) {
      for (let a = 0; a < 3; a++)
        for (let b = 0; b < 3; b++)
          g[a * 3 + b] = flipped ? w[((2 - a) * 3 + (2 - b)) * C * C + co * C + ci] : w[(a * 3 + b) * C * C + ci * C + co];
      // t = G g (4 x 3), then U = t Gᵀ (4 x 4); G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]
      for (let b = 0; b < 3; b++) {
        const [g0, g1, g2] = [g[b], g[3 + b], g[6 + b]];
        t[b] = g0;
        t[3 + b] = (g0 + g1 + g2) / 2;
        t[6 + b] = (g0 - g1 + g2) / 2;
        t[9 + b] = g2;
      }
      for (let i = 0; i < 4; i++) {
        const [t0, t1, t2] = [t[i * 3], t[i * 3 + 1], t[i * 3 + 2]];
        const row = [t0, (t0 + t1 + t2) / 2, (t0 - t1 + t2) / 2, t2];
        for (let j = 0; j < 4; j++) u[((i * 4 + j) * C + ci) * C + co] = row[j];
      }
    }
  return u;
}

/**
 * The loop's wasm body: winograd(x, u, bias, y, scratch, firstRow, count, tilesW, tilesH) runs tile rows
 * [firstRow, firstRow + count) of NHWC x, n images of 2 tilesH x 2 tilesW pixels with 16 channels (tile row r: image
 * r / tilesH), into y (the same shape); tilesW >= 2. The 'same' padding is read from zeros: a zero row for the rows
 * above and below the image, and for the first and last tile of a row, copies of their 4 x 3 input pixels next to
 * a zero column (left and right edge patches).
 * - u: winogradFilter's 4096 floats; bias: 16 floats; relu: y = max(0, ...), NaN kept.
 * - scratch: winogradScratchFloats(tilesW) of this thread's floats: the row's V ([ξ][tile][ci], tiles rounded up to
 *   even: the loop multiplies them in pairs, the extra one reading the zero row), its M ([tile][ξ][co]), the zero
 *   row and the two edge patches.
 */
export function winogradBody(relu: boolean, fused: boolean): number[] {
  return tileRowLoop({ kind: relu ? 'convRelu' : 'conv', fused });
}

/**
 * The filter gradient's wasm body: winogradfilter(x, dy, table, sums, scratch, firstRow, count, tilesW, tilesH)
 * adds, for tile rows [firstRow, firstRow + count) of x and dy (both as winogradBody's x), S[ξ][ci][co] += the sum
 * over tiles of X[ξ][tile][ci] Y[ξ][tile][co] into `sums` (4096 floats), where X = Bᵀ d B (the forward pass's input
 * transform) and Y = A dy Aᵀ (dy's 2x2 block under the tile, transformed). The filter's gradient is then Gᵀ S G
 * (winogradFilterGradient): the transpose of the forward pass, y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, with respect to g.
 * The sums over tiles are the filter gradient's own loop (convgrad, called with the tiles as its pixels and `table`
 * holding 4 ci, the byte offsets of the 16 input channels). scratch: winogradScratchFloats(tilesW) floats.
 */
export function winogradFilterGradBody(fused: boolean, convgradIndex: number): number[] {
  return tileRowLoop({ kind: 'filterGrad', fused, convgradIndex });
}

type TileRowLoop = { kind: 'conv' | 'convRelu'; fused: boolean } | { kind: 'filterGrad'; fused: boolean; convgradIndex: number };

/** The loop over rows of tiles that winogradBody and winogradFilterGradBody share; `kind` says what each row does. */
function tileRowLoop(spec: TileRowLoop): number[] {
  const { fused } = spec;
  const relu = spec.kind === 'convRelu';
  // params (the filter gradient's: x, dy, table, sums, scratch, ...)
  const [x, u, bias, y, scratch, firstRow, count, tilesW, tilesH] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [dy, table, sumsAt] = [1, 2, 3];
  // i32 locals
  const [tr, end, img, t, Q, tilesWE, xiStride, outRow, tc, g, dst, xi, vA, uX, mA, mAt, q, c16, c64, ci] = [
    9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
  ];
  const [zeroRow, left, right, lastTile, imageRow] = [29, 30, 31, 32, 33];
  const rowAt = [34, 35, 36, 37]; // the tile row's four input rows (image rows 2t - 1 .. 2t + 2), at column 0
  const patch = [38, 39, 40, 41]; // the tile's four input rows, at its first column
  const I32_LOCALS = 33;
  // v128 locals: d (16), w (16), then the product's sums (8), its two broadcasts and four filter vectors
  const d = Array.from({ length: 16 }, (_, k) => 42 + k);
  const w = Array.from({ length: 16 }, (_, k) => 58 + k);
  const sums = Array.from({ length: 8 }, (_, k) => 74 + k);
  const [sA, sB] = [82, 83];
  const uv = [84, 85, 86, 87];
  const V128_LOCALS = 46;

  const get = op.get;
  const set = op.set;
  /** local = a op b for two f32x4 locals */
  const vop = (dstLocal: number, a: number, b: number, f: number[]) => [...get(a), ...get(b), ...f, ...set(dstLocal)];
  const add = (dstLocal: number, a: number, b: number) => vop(dstLocal, a, b, op.f32x4Add);
  const sub = (dstLocal: number, a: number, b: number) => vop(dstLocal, a, b, op.f32x4Sub);
  const i32Set = (local: number, code: number[]) => [...code, ...set(local)];
  const fourRows = (f: (i: number) => number[]) => [0, 1, 2, 3].flatMap(f);
  const EDGE_ROW = 4 * PIXEL; // an edge patch's row: 4 pixels

  // The tile row's input rows, and its edge patches: the left one's rows are [0, x0, x1, x2], the right one's
  // [x(w-3), x(w-2), x(w-1), 0] (their zero column was filled once, at the start).
  const rowsOfTileRow = fourRows((i) => [
    // imageRow = 2t - 1 + i; out of the image (unsigned: -1 wraps around) -> the zero row
    ...i32Set(imageRow, [...get(t), ...op.i32(2), ...op.mul, ...op.i32(i - 1), ...op.add]),
    ...get(imageRow),
    ...get(tilesH),
    ...op.i32(2),
    ...op.mul,
    ...op.ltU,
    ...op.if,
    ...i32Set(rowAt[i], [
      ...get(x),
      ...get(img),
      ...get(tilesH),
      ...op.i32(2),
      ...op.mul,
      ...op.mul,
      ...get(imageRow),
      ...op.add,
      ...get(Q),
      ...op.mul,
      ...op.add,
    ]),
    ...op.else,
    ...i32Set(rowAt[i], get(zeroRow)),
    ...op.end,
    ...op.memoryCopy([...get(left), ...op.i32(i * EDGE_ROW + PIXEL), ...op.add], get(rowAt[i]), op.i32(3 * PIXEL)),
    ...op.memoryCopy(
      [...get(right), ...op.i32(i * EDGE_ROW), ...op.add],
      [...get(rowAt[i]), ...get(Q), ...op.add, ...op.i32(3 * PIXEL), ...op.sub],
      op.i32(3 * PIXEL),
    ),
  ]);

  // 1. The row's input transform: for every tile and group of 4 channels, V = Bᵀ d B into scratch.
  const patchOf = (base: (i: number) => number[]) => fourRows((i) => i32Set(patch[i], base(i)));
  const tilePatch = [
    ...get(tc),
    ...op.eqz,
    ...op.if,
    ...patchOf((i) => [...get(left), ...op.i32(i * EDGE_ROW), ...op.add]),
    ...op.else,
    ...get(tc),
    ...get(lastTile),
    ...op.eq,
    ...op.if,
    ...patchOf((i) => [...get(right), ...op.i32(i * EDGE_ROW), ...op.add]),
    ...op.else,
    ...get(tc),
    ...get(tilesW),
    ...op.geU,
    ...op.if,
    ...patchOf(() => get(zeroRow)), // the extra tile of an odd row
    ...op.else,
    // columns 2 tc - 1 .. 2 tc + 2
    ...patchOf((i) => [...get(rowAt[i]), ...get(tc), ...op.i32(2 * PIXEL), ...op.mul, ...op.add, ...op.i32(PIXEL), ...op.sub]),
    ...op.end,
    ...op.end,
    ...op.end,
  ];
  const loadPatch = d.flatMap((dl, k) => {
    const [i, j] = [Math.floor(k / 4), k % 4];
    return [...get(patch[i]), ...get(g), ...op.add, ...op.v128LoadAt(j * PIXEL), ...set(dl)];
  });
  // W = Bᵀ d: per column j, W0 = d0 - d2, W1 = d1 + d2, W2 = d2 - d1, W3 = d1 - d3 (row-major indices i * 4 + j)
  const bt = (out: number[], inp: number[], stride: number, step: number) =>
    [0, 1, 2, 3].flatMap((c) => {
      const at = (k: number) => inp[c * step + k * stride];
      const to = (k: number) => out[c * step + k * stride];
      return [...sub(to(0), at(0), at(2)), ...add(to(1), at(1), at(2)), ...sub(to(2), at(2), at(1)), ...sub(to(3), at(1), at(3))];
    });
  const storeV = w.flatMap((_, k) => [...get(dst), ...get(d[k]), ...op.v128StoreAt(0), ...bump(dst, { local: xiStride })]);
  const inputTransform = [
    ...i32Set(tc, op.i32(0)),
    ...whileBelow(tc, tilesWE, [
      ...tilePatch,
      ...i32Set(g, op.i32(0)),
      ...whileBelow(g, c64, [
        ...loadPatch,
        ...bt(w, d, 4, 1), // columns: k = i * 4 + j, stride 4 over i
        ...bt(d, w, 1, 4), // rows: stride 1 over j; V back in d
        ...i32Set(dst, [...get(scratch), ...get(tc), ...op.i32(PIXEL), ...op.mul, ...op.add, ...get(g), ...op.add]),
        ...storeV,
        ...bump(g, 16),
      ]),
      ...bump(tc, 1),
    ]),
  ];

  // 2. The products, two tiles (A, B) at a time: M[tile][ξ][co] = sum over ci of V[ξ][tile][ci] U[ξ][ci][co].
  // One input channel per iteration (vA and uX step on): an unrolled loop let V8 hoist all its loads and spill them.
  const ciLoop = whileBelow(ci, c16, [
    ...get(vA),
    ...op.splatAt(0),
    ...set(sA),
    ...get(vA),
    ...op.splatAt(PIXEL),
    ...set(sB),
    ...uv.flatMap((ul, k) => [...get(uX), ...op.v128LoadAt(k * 16), ...set(ul)]),
    ...uv.flatMap((ul, k) => [
      ...mulAdd(fused, get(sA), get(ul), get(sums[k])),
      ...set(sums[k]),
      ...mulAdd(fused, get(sB), get(ul), get(sums[4 + k])),
      ...set(sums[4 + k]),
    ]),
    ...bump(vA, 4),
    ...bump(uX, PIXEL),
    ...bump(ci, 1),
  ]);
  const product = [
    ...i32Set(tc, op.i32(0)),
    ...whileBelow(tc, tilesWE, [
      ...i32Set(xi, op.i32(0)),
      ...whileBelow(xi, c16, [
        ...i32Set(vA, [
          ...get(scratch),
          ...get(xi),
          ...get(xiStride),
          ...op.mul,
          ...op.add,
          ...get(tc),
          ...op.i32(PIXEL),
          ...op.mul,
          ...op.add,
        ]),
        ...i32Set(uX, [...get(u), ...get(xi), ...op.i32(16 * PIXEL), ...op.mul, ...op.add]),
        ...i32Set(mA, [
          ...get(mAt),
          ...get(tc),
          ...op.i32(16 * PIXEL),
          ...op.mul,
          ...op.add,
          ...get(xi),
          ...op.i32(PIXEL),
          ...op.mul,
          ...op.add,
        ]),
        ...sums.flatMap((s) => [...op.v128Zero, ...set(s)]),
        ...i32Set(ci, op.i32(0)),
        ...ciLoop,
        ...sums.flatMap((s, k) => [...get(mA), ...get(s), ...op.v128StoreAt((k >= 4 ? 16 * PIXEL : 0) + (k % 4) * 16)]),
        ...bump(xi, 1),
      ]),
      ...bump(tc, 2),
    ]),
  ];

  // 3. The outputs: per tile and group of 4 channels, Y = Aᵀ M A + bias (then ReLU), a 2x2 block of pixels.
  // T = Aᵀ M: per column j, T0 = M0 + M1 + M2, T1 = M1 - M2 - M3; Y = T A: per row, Y0 = T0 + T1 + T2, Y1 = T1 - T2 - T3.
  const m = d;
  const [tt, yv] = [w.slice(0, 8), w.slice(8, 12)];
  const [b, zero] = [w[12], w[13]];
  const sum3 = (out: number, a: number, bb: number, c: number) => [
    ...get(a),
    ...get(bb),
    ...op.f32x4Add,
    ...get(c),
    ...op.f32x4Add,
    ...set(out),
  ];
  const diff3 = (out: number, a: number, bb: number, c: number) => [
    ...get(a),
    ...get(bb),
    ...op.f32x4Sub,
    ...get(c),
    ...op.f32x4Sub,
    ...set(out),
  ];
  const columns = [0, 1, 2, 3].flatMap((j) => [
    ...sum3(tt[j], m[j], m[4 + j], m[8 + j]),
    ...diff3(tt[4 + j], m[4 + j], m[8 + j], m[12 + j]),
  ]);
  const rows = [0, 1].flatMap((r) => [
    ...sum3(yv[r * 2], tt[r * 4], tt[r * 4 + 1], tt[r * 4 + 2]),
    ...diff3(yv[r * 2 + 1], tt[r * 4 + 1], tt[r * 4 + 2], tt[r * 4 + 3]),
  ]);
  const finish = (v: number) => [...get(v), ...get(b), ...op.f32x4Add, ...(relu ? [...get(zero), ...op.f32x4Max] : [])];
  // o = outRow + tc * 2 pixels + q: the block's top-left; the bottom row is Q bytes further
  const o = dst;
  const storeY = [
    ...get(o),
    ...finish(yv[0]),
    ...op.v128StoreAt(0),
    ...get(o),
    ...finish(yv[1]),
    ...op.v128StoreAt(PIXEL),
    ...get(o),
    ...get(Q),
    ...op.add,
    ...finish(yv[2]),
    ...op.v128StoreAt(0),
    ...get(o),
    ...get(Q),
    ...op.add,
    ...finish(yv[3]),
    ...op.v128StoreAt(PIXEL),
  ];
  const outputTransform = [
    ...op.v128Zero,
    ...set(zero),
    ...i32Set(tc, op.i32(0)),
    ...whileBelow(tc, tilesW, [
      ...i32Set(q, op.i32(0)),
      ...whileBelow(q, c64, [
        ...i32Set(dst, [...get(mAt), ...get(tc), ...op.i32(16 * PIXEL), ...op.mul, ...op.add, ...get(q), ...op.add]),
        ...m.flatMap((ml, k) => [...get(dst), ...op.v128LoadAt(k * PIXEL), ...set(ml)]),
        ...columns,
        ...rows,
        ...get(bias),
        ...get(q),
        ...op.add,
        ...op.v128Load,
        ...set(b),
        ...i32Set(o, [...get(outRow), ...get(tc), ...op.i32(2 * PIXEL), ...op.mul, ...op.add, ...get(q), ...op.add]),
        ...storeY,
        ...bump(q, 16),
      ]),
      ...bump(tc, 1),
    ]),
  ];

  const setup = [
    ...i32Set(c16, op.i32(16)),
    ...i32Set(c64, op.i32(64)),
    // tilesWE = tilesW + (tilesW & 1); Q = a row of 2 tilesW pixels; ξ's stride in V = tilesWE pixels
    ...i32Set(tilesWE, [...get(tilesW), ...get(tilesW), ...op.i32(1), ...op.andI32, ...op.add]),
    ...i32Set(lastTile, [...get(tilesW), ...op.i32(1), ...op.sub]),
    ...i32Set(Q, [...get(tilesW), ...op.i32(2 * PIXEL), ...op.mul]),
    ...i32Set(xiStride, [...get(tilesWE), ...op.i32(PIXEL), ...op.mul]),
    // scratch: V, M (16 xiStride bytes each), the zero row (Q + 2 pixels), the left and right edge patches
    ...i32Set(mAt, [...get(scratch), ...get(xiStride), ...op.i32(16), ...op.mul, ...op.add]),
    ...i32Set(zeroRow, [...get(mAt), ...get(xiStride), ...op.i32(16), ...op.mul, ...op.add]),
    ...i32Set(left, [...get(zeroRow), ...get(Q), ...op.add, ...op.i32(2 * PIXEL), ...op.add]),
    ...i32Set(right, [...get(left), ...op.i32(4 * EDGE_ROW), ...op.add]),
    ...op.memoryFill(get(zeroRow), op.i32(0), [...get(Q), ...op.i32(2 * PIXEL + 8 * EDGE_ROW), ...op.add]),
    ...i32Set(end, [...get(firstRow), ...get(count), ...op.add]),
    ...i32Set(tr, get(firstRow)),
  ];
  // The filter gradient's dy transform: per tile and group of 4 channels, Y = A dy Aᵀ from dy's 2x2 block (rows of
  // A dy: dy0, dy0 + dy1, dy0 - dy1, -dy1; each row times Aᵀ likewise), into the M area as [ξ][tile][co].
  const z = w.slice(0, 8); // A dy, 4 rows of 2
  const dyBlock = d.slice(0, 4);
  const negate = (out: number, a: number) => [...get(a), ...op.f32x4Neg, ...set(out)];
  const aTimes = (out: number[], a0: number, a1: number) => [
    ...get(a0),
    ...set(out[0]),
    ...add(out[1], a0, a1),
    ...sub(out[2], a0, a1),
    ...negate(out[3], a1),
  ];
  const dyTransform = [
    ...i32Set(tc, op.i32(0)),
    ...whileBelow(tc, tilesW, [
      ...i32Set(g, op.i32(0)),
      ...whileBelow(g, c64, [
        // outRow is dy's row 2t here; the block: (2t, 2tc), (2t, 2tc + 1), (2t + 1, 2tc), (2t + 1, 2tc + 1)
        ...i32Set(dst, [...get(outRow), ...get(tc), ...op.i32(2 * PIXEL), ...op.mul, ...op.add, ...get(g), ...op.add]),
        ...get(dst),
        ...op.v128LoadAt(0),
        ...set(dyBlock[0]),
        ...get(dst),
        ...op.v128LoadAt(PIXEL),
        ...set(dyBlock[1]),
        ...get(dst),
        ...get(Q),
        ...op.add,
        ...op.v128LoadAt(0),
        ...set(dyBlock[2]),
        ...get(dst),
        ...get(Q),
        ...op.add,
        ...op.v128LoadAt(PIXEL),
        ...set(dyBlock[3]),
        // columns of the block (k = 0, 1): A times (row 0, row 1)
        ...[0, 1].flatMap((k) => aTimes([z[k], z[2 + k], z[4 + k], z[6 + k]], dyBlock[k], dyBlock[2 + k])),
        // each row i of A dy (z[2i], z[2i + 1]) times Aᵀ: Y[4i .. 4i + 3], into d
        ...[0, 1, 2, 3].flatMap((i) => aTimes(d.slice(4 * i, 4 * i + 4), z[2 * i], z[2 * i + 1])),
        ...i32Set(dst, [...get(mAt), ...get(tc), ...op.i32(PIXEL), ...op.mul, ...op.add, ...get(g), ...op.add]),
        ...storeV,
        ...bump(g, 16),
      ]),
      ...bump(tc, 1),
    ]),
  ];
  // S[ξ] += X[ξ]ᵀ Y[ξ] over the row's tiles: convgrad(X[ξ], Y[ξ], S[ξ], tilesW, 64, 64, table, 16) for each ξ
  const tileSums =
    spec.kind === 'filterGrad'
      ? [
          ...i32Set(xi, op.i32(0)),
          ...whileBelow(xi, c16, [
            ...i32Set(vA, [...get(scratch), ...get(xi), ...get(xiStride), ...op.mul, ...op.add]),
            ...get(vA),
            ...get(mAt),
            ...get(xi),
            ...get(xiStride),
            ...op.mul,
            ...op.add,
            ...get(sumsAt),
            ...get(xi),
            ...op.i32(16 * PIXEL),
            ...op.mul,
            ...op.add,
            ...get(tilesW),
            ...op.i32(PIXEL),
            ...op.i32(PIXEL),
            ...get(table),
            ...op.i32(WINOGRAD_CHANNELS),
            ...op.call(spec.convgradIndex),
            ...bump(xi, 1),
          ]),
        ]
      : [];
  const perTileRow = [
    ...i32Set(img, [...get(tr), ...get(tilesH), ...op.divU]),
    ...i32Set(t, [...get(tr), ...get(img), ...get(tilesH), ...op.mul, ...op.sub]),
    // outRow = y + (img 2 tilesH + 2t) Q (the filter gradient: dy's row)
    ...i32Set(outRow, [
      ...get(spec.kind === 'filterGrad' ? dy : y),
      ...get(img),
      ...get(tilesH),
      ...op.mul,
      ...get(t),
      ...op.add,
      ...op.i32(2),
      ...op.mul,
      ...get(Q),
      ...op.mul,
      ...op.add,
    ]),
    ...rowsOfTileRow,
    ...inputTransform,
    ...(spec.kind === 'filterGrad' ? [...dyTransform, ...tileSums] : [...product, ...outputTransform]),
    ...bump(tr, 1),
  ];
  return [
    ...vec([
      [I32_LOCALS, I32],
      [V128_LOCALS, V128],
    ]),
    ...setup,
    ...whileBelow(tr, end, perTileRow),
    ...op.end,
  ];
}

/** Floats of scratch one thread of the loop needs for rows of `tilesW` tiles (see winogradBody). */
function winogradScratchFloats(tilesW: number): number {
  const tilesWE = tilesW + (tilesW % 2);
  return 2 * 16 * tilesWE * WINOGRAD_CHANNELS + (2 * tilesW + 2) * WINOGRAD_CHANNELS + 2 * 16 * WINOGRAD_CHANNELS;
}

/**
 * The convolution of NHWC x [n, h, w, 16] (h and w even) with the transformed filter u (winogradFilter), plus
 * `bias` (16 floats; none: zeros) and, with `relu`, ReLU: a new [n, h, w, 16] tensor.
 */
export function winogradConv(
  backend: WasmBackend,
  loops: SimdLoops,
  x: TensorInfo,
  u: Float32Array,
  bias: Float32Array | undefined,
  relu: boolean,
): TensorInfo {
  const [n, h, w, c] = x.shape;
  const [tilesH, tilesW] = [h / 2, w / 2];
  const constants = allocate(backend, [WINOGRAD_FILTER_FLOATS + WINOGRAD_CHANNELS]);
  const y = allocate(backend, [n, h, w, c]);
  try {
    const k = view(backend, constants);
    k.set(u);
    k.fill(0, WINOGRAD_FILTER_FLOATS);
    if (bias) k.set(bias, WINOGRAD_FILTER_FLOATS);
    const uAt = byteOffset(backend, constants);
    const call: RowCall = {
      loop: relu ? 'winogradrelu' : 'winograd',
      args: [byteOffset(backend, x), uAt, uAt + 4 * WINOGRAD_FILTER_FLOATS, byteOffset(backend, y), 0, 0, 0, tilesW, tilesH],
      strides: [0, 0, 0, 0, 0, 1, 0, 0, 0],
      countArg: 6,
      partialArgs: 1 << 4,
    };
    runRows(backend, loops, call, n * tilesH, n * h * w * c * 9, 0, winogradScratchFloats(tilesW));
  } catch (err) {
    release(backend, y);
    throw err;
  } finally {
    release(backend, constants);
  }
  return y;
}

/** Gᵀ of F(2x2, 3x3): the filter gradient is Gᵀ S G (winogradFilterGradBody). */
const G_T = [
  [1, 0.5, 0.5, 0],
  [0, 0.5, -0.5, 0],
  [0, 0.5, 0.5, 1],
];

/**
 * The filter gradient of a 16 -> 16 channel 3x3 convolution (stride 1, 'same') from its input x and output
 * gradient dy, both [n, h, w, 16] (h and w even): a new [3, 3, 16, 16] tensor. The sums over tiles move into
 * float64 every 8 rows of tiles (600 tiles at 150 pixels a row), so their float32 rounding stays small.
 */
export function winogradFilterGrad(backend: WasmBackend, loops: SimdLoops, x: TensorInfo, dy: TensorInfo): TensorInfo {
  const [n, h, w, c] = x.shape;
  const [tilesH, tilesW] = [h / 2, w / 2];
  const table = allocate(backend, [WINOGRAD_CHANNELS]);
  let sums: Float64Array;
  try {
    const tableAt = byteOffset(backend, table);
    new Int32Array(view(backend, table).buffer, tableAt, WINOGRAD_CHANNELS).set(
      Array.from({ length: WINOGRAD_CHANNELS }, (_, ci) => 4 * ci),
    );
    const call: RowCall = {
      loop: 'winogradfilter',
      // the sums, then the scratch, in each thread's own region
      args: [byteOffset(backend, x), byteOffset(backend, dy), tableAt, 0, 4 * WINOGRAD_FILTER_FLOATS, 0, 0, tilesW, tilesH],
      strides: [0, 0, 0, 0, 0, 1, 0, 0, 0],
      countArg: 6,
      partialArgs: (1 << 3) | (1 << 4),
      chunkRows: 8,
    };
    sums = runRows(backend, loops, call, n * tilesH, n * h * w * c * 9, WINOGRAD_FILTER_FLOATS, winogradScratchFloats(tilesW));
  } finally {
    release(backend, table);
  }
  const C = WINOGRAD_CHANNELS;
  const dw = allocate(backend, [3, 3, C, C]);
  const out = view(backend, dw);
  for (let a = 0; a < 3; a++)
    for (let b = 0; b < 3; b++)
      for (let k = 0; k < C * C; k++) {
        let v = 0;
        for (let i = 0; i < 4; i++) {
          if (G_T[a][i] === 0) continue;
          for (let j = 0; j < 4; j++) if (G_T[b][j] !== 0) v += G_T[a][i] * G_T[b][j] * sums[(i * 4 + j) * C * C + k];
        }
        out[(a * 3 + b) * C * C + k] = v;
      }
  return dw;
}
