// Our own Winograd convolutions, F(2x2, 3x3) and F(4x4, 3x3), for the 16 -> 16 channel 3x3 convolutions with
// stride 1 (block 1's second layer, the largest of the network): the forward pass and both gradients, for CPUs where
// oneDNN has no Winograd of its own (it has one on AVX-512 only). Each MxM output tile is A^T [(G g G^T) . (B^T d B)] A
// over an (M+2)x(M+2) input patch: per output pixel, 16 x 16 channel products at (M+2)^2 / M^2 points instead of 9
// taps: 4 for F(2x2), 2.25 for F(4x4) (2.25x and 4x fewer multiply-adds; F(4x4)'s transforms cost more and round a
// little more, its points being 0, +-1, +-2). One call of the tile-row loop transforms a row of input patches into a
// per-thread buffer, multiplies, and transforms the row back, so the transformed data stays in cache; the filter
// gradient is the same algorithm transposed. conv.cc times each direction against the direct convolution and keeps
// whichever is clearly faster (its comment has the times).
#include "winograd.h"

#include "pool.h"

#include <algorithm>
#include <array>
#include <limits>
#include <vector>

namespace pn {
namespace {

constexpr int kChannels = 16;
// Tiles per register block of the products: AVX-512 keeps 12 tiles x 1 vector of 16 sums, AVX2 6 x 2 (12 of its 16
// registers), SSE 3 x 4.
constexpr int kTiles = 12 / kParts16;

// The 1-D transforms of F(M, 3) (Lavin and Gray, 2016), applied along one axis of a tile and then the other:
// input (B^T, N = M + 2 values in and out), output (A^T, N in, M out), and its transpose for the gradient (A, M in,
// N out); kG is G, N x 3.
template <int M>
struct Tile;

template <>
struct Tile<2> {
  static constexpr int N = 4;
  static constexpr double kG[N][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static void input(const FloatsV* d, FloatsV* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  }
  static void output(const FloatsV* m, FloatsV* y) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
  static void outputGrad(const FloatsV* d, FloatsV* o) {
    o[0] = d[0];
    o[1] = d[0] + d[1];
    o[2] = d[0] - d[1];
    o[3] = -d[1];
  }
};

template <>
struct Tile<4> {
  static constexpr int N = 6;
  static constexpr double kG[N][3] = {{1. / 4, 0, 0},           {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                                      {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  static void input(const FloatsV* d, FloatsV* o) {
    const FloatsV a = d[4] - 4 * d[2], b = d[3] - 4 * d[1], c = d[4] - d[2], e = 2 * (d[3] - d[1]);
    o[0] = 4 * d[0] - 5 * d[2] + d[4];
    o[1] = a + b;
    o[2] = a - b;
    o[3] = c + e;
    o[4] = c - e;
    o[5] = 4 * d[1] - 5 * d[3] + d[5];
  }
  static void output(const FloatsV* m, FloatsV* y) {
    const FloatsV s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    y[0] = m[0] + s12 + s34;
    y[1] = d12 + 2 * d34;
    y[2] = s12 + 4 * s34;
    y[3] = d12 + 8 * d34 + m[5];
  }
  static void outputGrad(const FloatsV* d, FloatsV* o) {
    const FloatsV s02 = d[0] + d[2], s13 = d[1] + d[3], e02 = d[0] + 4 * d[2], e13 = 2 * d[1] + 8 * d[3];
    o[0] = d[0];
    o[1] = s02 + s13;
    o[2] = s02 - s13;
    o[3] = e02 + e13;
    o[4] = e02 - e13;
    o[5] = d[3];
  }
};

// A 1-D transform (K values in, L out) along the columns of a K x K block and then along its rows: L x L out.
template <int K, int L, typename F>
inline void transform2d(const FloatsV* in, FloatsV* out, F f) {
  FloatsV t[L * K];
  for (int j = 0; j < K; j++) {
    FloatsV col[K], res[L];
    for (int i = 0; i < K; i++) col[i] = in[i * K + j];
    f(col, res);
    for (int i = 0; i < L; i++) t[i * K + j] = res[i];
  }
  for (int i = 0; i < L; i++) f(t + i * K, out + i * L);
}

// Where the tiles of one call sit: the input (the image, or dy for the input gradient), the output, and the input
// row and column of output (0, 0)'s window, minus one (the padding at the top and left).
struct TileGeom {
  int64_t n, inH, inW, outH, outW, padTop, padLeft;
};

// The tile geometry of the forward pass, and of the input gradient (dy padded by 2 - the forward padding).
TileGeom forwardGeom(const ConvGeom& g) { return TileGeom{g.n, g.h, g.w, g.oh, g.ow, g.pt, g.pl}; }
TileGeom backwardDataGeom(const ConvGeom& g) { return TileGeom{g.n, g.oh, g.ow, g.h, g.w, 2 - g.pt, 2 - g.pl}; }

template <int M>
int64_t tilesAlong(int64_t outputs) {
  return (outputs + M - 1) / M;
}

// U[xi][ci][co] = (G g G^T)[xi] for each channel pair, from a HWIO filter; `flipped` takes the filter turned 180
// degrees with its channels swapped (what the input gradient convolves dy with). In double, then rounded once.
template <int M>
std::vector<float> transformFilter(const float* w, bool flipped) {
  constexpr int N = Tile<M>::N;
  const auto& kG = Tile<M>::kG;
  std::vector<float> u(N * N * kChannels * kChannels);
  for (int ci = 0; ci < kChannels; ci++)
    for (int co = 0; co < kChannels; co++) {
      double g[3][3];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
          g[a][b] = flipped ? w[((2 - a) * 3 + (2 - b)) * 256 + co * kChannels + ci]
                            : w[(a * 3 + b) * 256 + ci * kChannels + co];
      for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
          double sum = 0;
          for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) sum += kG[i][a] * g[a][b] * kG[j][b];
          u[((i * N + j) * kChannels + ci) * kChannels + co] = static_cast<float>(sum);
        }
    }
  return u;
}

// For each of `tiles` tiles along a row, the K x K block of pixels whose columns start at M * tile - shift, from
// rows[0..K-1] (a null row, or a column outside [0, width), reads as zeros), transformed by f along both axes into
// L x L points, stored as out[point][tile][channel].
template <int M, int K, int L, typename F>
void transformTileRow(const float* const* rows, int64_t shift, int64_t width, int64_t tiles, F f, float* out) {
  const FloatsV zero = {};
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV d[K * K], t[L * L];
      for (int j = 0; j < K; j++) {
        const int64_t col = M * tc - shift + j;
        const bool inside = col >= 0 && col < width;
        for (int i = 0; i < K; i++)
          d[i * K + j] = inside && rows[i] ? loadV(rows[i] + col * kChannels + q * kLanes) : zero;
      }
      transform2d<K, L>(d, t, f);
      for (int k = 0; k < L * L; k++) storeV(out + (k * tiles + tc) * kChannels + q * kLanes, t[k]);
    }
}

// V[xi][tile][c] = (B^T d B)[xi] for the row of tiles whose N input rows are rows[0..N-1] (a zero row outside the
// input); columns outside the input read as zeros.
template <int M>
void inputTransform(const float* const* rows, const TileGeom& g, float* v) {
  constexpr int N = Tile<M>::N;
  transformTileRow<M, N, N>(rows, g.padLeft, g.inW, tilesAlong<M>(g.outW), Tile<M>::input, v);
}

// M[tile][xi][co] = sum over ci of V[xi][tile][ci] U[xi][ci][co] for P tiles, the sums in registers; `tileStride` is
// the floats between two tiles of M.
template <int P>
inline void productBlock(const float* v, const float* u, float* m, int64_t tileStride) {
  FloatsV acc[P][kParts16] = {};
  for (int ci = 0; ci < kChannels; ci++) {
    FloatsV uv[kParts16];
    for (int q = 0; q < kParts16; q++) uv[q] = loadV(u + ci * kChannels + q * kLanes);
    for (int p = 0; p < P; p++) {
      const float s = v[p * kChannels + ci];
      for (int q = 0; q < kParts16; q++) acc[p][q] += s * uv[q];
    }
  }
  for (int p = 0; p < P; p++)
    for (int q = 0; q < kParts16; q++) storeV(m + p * tileStride + q * kLanes, acc[p][q]);
}

// The products of a row of tiles. Where the tile count is not a multiple of kTiles, the last block overlaps the one
// before it and writes the same values again.
template <int M>
void products(const float* v, const float* u, int64_t tiles, float* m) {
  constexpr int kPoints = Tile<M>::N * Tile<M>::N;
  constexpr int64_t tileStride = kPoints * kChannels;
  for (int xi = 0; xi < kPoints; xi++) {
    const float* vx = v + xi * tiles * kChannels;
    const float* ux = u + xi * 256;
    float* mx = m + xi * kChannels;
    if (tiles < kTiles) {
      for (int64_t t = 0; t < tiles; t++) productBlock<1>(vx + t * kChannels, ux, mx + t * tileStride, tileStride);
      continue;
    }
    for (int64_t t = 0;; t += kTiles) {
      t = std::min(t, tiles - kTiles);
      productBlock<kTiles>(vx + t * kChannels, ux, mx + t * tileStride, tileStride);
      if (t + kTiles >= tiles) break;
    }
  }
}

// The M x M outputs of tile tc's channel part q: A^T M A (+ bias, ReLU keeping NaN), row by row.
template <int M>
inline void tileOutputs(const float* m, int64_t tc, int q, const float* bias, bool relu, FloatsV* y) {
  constexpr int N = Tile<M>::N;
  const FloatsV zero = {};
  FloatsV mm[N * N];
  for (int k = 0; k < N * N; k++) mm[k] = loadV(m + (tc * N * N + k) * kChannels + q * kLanes);
  transform2d<N, M>(mm, y, Tile<M>::output);
  const FloatsV b = bias ? loadV(bias + q * kLanes) : zero;
  for (int k = 0; k < M * M; k++) {
    y[k] += b;
    if (relu) y[k] = (y[k] > zero) | (y[k] != y[k]) ? y[k] : zero;
  }
}

// Output rows out[0..M-1] (null past the output's last row) = A^T M A (+ bias, ReLU) of a row of tiles; columns
// past the output's width are not written.
template <int M>
void outputTransform(const float* m, const TileGeom& g, const float* bias, bool relu, float* const* out) {
  const int64_t tiles = tilesAlong<M>(g.outW);
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV y[M * M];
      tileOutputs<M>(m, tc, q, bias, relu, y);
      for (int r = 0; r < M; r++) {
        if (!out[r]) continue;
        for (int c = 0; c < M && M * tc + c < g.outW; c++) storeV(out[r] + (M * tc + c) * kChannels + q * kLanes, y[r * M + c]);
      }
    }
}

// The same outputs max-pooled over 2x2 windows with stride 2 ('valid'): pooled rows pooled[0..M/2-1] (null past the
// pooled output's last row), floor(outW / 2) columns, and where `codes` is not null, the pooling's codes in rows
// codes[0..M/2-1] laid out as the pooled ones (pool.h; what training's gradient needs of the ReLU's output). M is even
// and tiles start at even rows and columns, so every window lies inside one tile. maxOfFourWithCodes takes MaxPool's
// rule (pool.cc), so NaN never wins and the result is MaxPool's of outputTransform's.
template <int M>
void outputTransformMaxPool(const float* m, const TileGeom& g, const float* bias, bool relu, float* const* pooled,
                            Code* const* codes) {
  static_assert(M % 2 == 0, "2x2 windows must not straddle two tiles");
  const int64_t tiles = tilesAlong<M>(g.outW), pooledW = g.outW / 2;
  Code unused[kLanes];
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV y[M * M];
      tileOutputs<M>(m, tc, q, bias, relu, y);
      for (int pr = 0; pr < M / 2; pr++) {
        if (!pooled[pr]) continue;
        for (int pc = 0; pc < M / 2 && M / 2 * tc + pc < pooledW; pc++) {
          const FloatsV taps[4] = {y[2 * pr * M + 2 * pc], y[2 * pr * M + 2 * pc + 1], y[(2 * pr + 1) * M + 2 * pc],
                                   y[(2 * pr + 1) * M + 2 * pc + 1]};
          const int64_t at = (M / 2 * tc + pc) * kChannels + q * kLanes;
          storeV(pooled[pr] + at, maxOfFourWithCodes(taps, codes ? codes[pr] + at : unused));
        }
      }
    }
}

// The N input rows under tile row t of image b; `zeros` (a row of them) stands in for rows outside the input.
template <int M>
std::array<const float*, Tile<M>::N> patchRows(const TileGeom& g, const float* x, int64_t b, int64_t t,
                                               const float* zeros) {
  std::array<const float*, Tile<M>::N> rows;
  for (int i = 0; i < Tile<M>::N; i++) {
    const int64_t r = M * t - g.padTop + i;
    rows[i] = r >= 0 && r < g.inH ? x + (b * g.inH + r) * g.inW * kChannels : zeros;
  }
  return rows;
}

// A thread's rows expanded from a pooling's gradient, in slots by row number modulo kSlots, each slot tagged with
// the row it holds: the N - M rows that neighbouring tile rows share are expanded once (a thread's tile rows are
// consecutive).
struct ExpandedRows {
  static constexpr int kSlots = 8;  // more than the N consecutive rows of one tile row
  std::vector<float> buffer;
  std::array<int64_t, kSlots> held;
  ExpandedRows(int64_t rowFloats, bool used) : buffer(used ? kSlots * rowFloats : 0) { held.fill(-1); }
};

// patchRows' rows when the input is a pooling's gradient (the input gradient of training's fused conv + pooling):
// each expanded from the pooling's dy and codes into a slot of `cache`, unless it holds that row already.
template <int M>
std::array<const float*, Tile<M>::N> expandedPatchRows(const TileGeom& g, const PooledGrad& dy, int64_t b, int64_t t,
                                                       const float* zeros, ExpandedRows& cache) {
  std::array<const float*, Tile<M>::N> rows;
  for (int i = 0; i < Tile<M>::N; i++) {
    const int64_t r = M * t - g.padTop + i;
    if (r < 0 || r >= g.inH) {
      rows[i] = zeros;
      continue;
    }
    const int slot = static_cast<int>(r % ExpandedRows::kSlots);
    float* row = cache.buffer.data() + slot * g.inW * kChannels;
    if (cache.held[slot] != b * g.inH + r) {
      expandPooledGradRow(dy, b, r, g.inW, row);
      cache.held[slot] = b * g.inH + r;
    }
    rows[i] = row;
  }
  return rows;
}

// The M output (or dy) rows of tile row t of image b, null past the last row.
template <int M, typename T>
std::array<T*, M> tileRowOutputs(T* y, int64_t rowsPerImage, int64_t rowFloats, int64_t b, int64_t t) {
  std::array<T*, M> rows;
  for (int r = 0; r < M; r++)
    rows[r] = M * t + r < rowsPerImage ? y + (b * rowsPerImage + M * t + r) * rowFloats : nullptr;
  return rows;
}

// Where tileRows reads its input and writes its output: x, or the pooling gradient `dyPooled` expanded row by row;
// y, or with `pool` its 2x2 max pooling (outputTransformMaxPool) and, where `codes` is not null, that pooling's codes.
struct TileRowsIo {
  const float* x;
  const PooledGrad* dyPooled;
  float* y;
  bool pool;
  Code* codes;
};

// The convolution, tile row by tile row.
template <int M>
void tileRows(const TileGeom& g, const TileRowsIo& io, const std::vector<float>& u, const float* bias, bool relu) {
  constexpr int N = Tile<M>::N;
  const int64_t tilesH = tilesAlong<M>(g.outH), tiles = tilesAlong<M>(g.outW);
  float* y = io.y;
#pragma omp parallel
  {
    std::vector<float> v(static_cast<size_t>(N * N * tiles * kChannels)), m(v.size()),
        zeros(static_cast<size_t>(g.inW * kChannels), 0.f);
    ExpandedRows expanded(g.inW * kChannels, io.dyPooled != nullptr);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < g.n * tilesH; item++) {
      const int64_t b = item / tilesH, t = item % tilesH;
      const auto rows = io.dyPooled ? expandedPatchRows<M>(g, *io.dyPooled, b, t, zeros.data(), expanded)
                                    : patchRows<M>(g, io.x, b, t, zeros.data());
      inputTransform<M>(rows.data(), g, v.data());
      products<M>(v.data(), u.data(), tiles, m.data());
      if (io.pool)
        outputTransformMaxPool<M>(
            m.data(), g, bias, relu, tileRowOutputs<M / 2>(y, g.outH / 2, g.outW / 2 * kChannels, b, t).data(),
            io.codes ? tileRowOutputs<M / 2>(io.codes, g.outH / 2, g.outW / 2 * kChannels, b, t).data() : nullptr);
      else
        outputTransform<M>(m.data(), g, bias, relu, tileRowOutputs<M>(y, g.outH, g.outW * kChannels, b, t).data());
    }
  }
}

// dM[xi][tile][c] = (A dY A^T)[xi] for the row of tiles whose output rows are dy[0..M-1] (null past the output's
// last row): the output transform's transpose. Columns past the output's width read as zero.
template <int M>
void outputGradTransform(const float* const* dy, const TileGeom& g, float* dm) {
  transformTileRow<M, M, Tile<M>::N>(dy, 0, g.outW, tilesAlong<M>(g.outW), Tile<M>::outputGrad, dm);
}

// Input channels per register block of the filter gradient's products: with AVX-512 all 16 (16 sums, one vector of
// outputs each), with AVX2 4 (8 sums of two vectors each), so the sums, dM's vectors and a broadcast fit the registers.
constexpr int kGradChannels = kParts16 == 1 ? 16 : 4;

// s[xi][ci][co] += sum over the row's tiles of V[xi][tile][ci] dM[xi][tile][co], in float.
template <int M>
void filterGradProducts(const float* v, const float* dm, int64_t tiles, float* s) {
  for (int xi = 0; xi < Tile<M>::N * Tile<M>::N; xi++) {
    const float* vx = v + xi * tiles * kChannels;
    const float* dmx = dm + xi * tiles * kChannels;
    for (int c0 = 0; c0 < kChannels; c0 += kGradChannels) {
      FloatsV acc[kGradChannels][kParts16] = {};
      for (int64_t t = 0; t < tiles; t++) {
        FloatsV g[kParts16];
        for (int q = 0; q < kParts16; q++) g[q] = loadV(dmx + t * kChannels + q * kLanes);
        for (int c = 0; c < kGradChannels; c++) {
          const float a = vx[t * kChannels + c0 + c];
          for (int q = 0; q < kParts16; q++) acc[c][q] += a * g[q];
        }
      }
      for (int c = 0; c < kGradChannels; c++)
        for (int q = 0; q < kParts16; q++) {
          float* at = s + (xi * kChannels + c0 + c) * kChannels + q * kLanes;
          storeV(at, loadV(at) + acc[c][q]);
        }
    }
  }
}

// Tile rows whose sums a thread keeps in float before adding them into its double ones: float over a few hundred
// tiles, double over the whole batch (180,000 tiles of F(2x2) at 32x150x150).
constexpr int64_t kRowsPerFlush = 8;

// dW = G^T S G for each channel pair, S the sum over all tiles of V^T dM (the forward pass transposed), per thread
// and then added in thread order, so the result does not depend on timing. dy, or where dyPooled is not null, the
// rows expanded from that pooling gradient.
template <int M>
void backwardFilter(const ConvGeom& g, const float* x, const float* dy, const PooledGrad* dyPooled, float* dw) {
  constexpr int N = Tile<M>::N;
  const TileGeom tg = forwardGeom(g);
  const int64_t tilesH = tilesAlong<M>(g.oh), tiles = tilesAlong<M>(g.ow);
  constexpr size_t kSums = N * N * kChannels * kChannels;
  const int threads = omp_get_max_threads();
  std::vector<double> partial(threads * kSums, 0.0);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> v(static_cast<size_t>(N * N * tiles * kChannels)), dm(v.size()),
        zeros(static_cast<size_t>(g.w * kChannels), 0.f), rowSums(kSums, 0.f),
        expanded(dyPooled ? static_cast<size_t>(M * g.ow * kChannels) : 0);
    double* s = partial.data() + omp_get_thread_num() * kSums;
    int64_t rowsSummed = 0;
    auto flush = [&] {
      for (size_t k = 0; k < kSums; k++) s[k] += rowSums[k];
      std::fill(rowSums.begin(), rowSums.end(), 0.f);
    };
#pragma omp for schedule(static) nowait
    for (int64_t item = 0; item < g.n * tilesH; item++) {
      const int64_t b = item / tilesH, t = item % tilesH;
      inputTransform<M>(patchRows<M>(tg, x, b, t, zeros.data()).data(), tg, v.data());
      auto dyRows = tileRowOutputs<M>(dy, g.oh, g.ow * kChannels, b, t);
      if (dyPooled)
        for (int r = 0; r < M; r++) {
          if (M * t + r >= g.oh) continue;  // null already
          float* row = expanded.data() + r * g.ow * kChannels;
          expandPooledGradRow(*dyPooled, b, M * t + r, g.ow, row);
          dyRows[r] = row;
        }
      outputGradTransform<M>(dyRows.data(), tg, dm.data());
      filterGradProducts<M>(v.data(), dm.data(), tiles, rowSums.data());
      if (++rowsSummed % kRowsPerFlush == 0) flush();
    }
    flush();
  }
  for (int t = 1; t < threads; t++)
    for (size_t k = 0; k < kSums; k++) partial[k] += partial[t * kSums + k];
  const auto& kG = Tile<M>::kG;
  for (int ci = 0; ci < kChannels; ci++)
    for (int co = 0; co < kChannels; co++)
      for (int a = 0; a < 3; a++)
        for (int c = 0; c < 3; c++) {
          double sum = 0;
          for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
              sum += kG[i][a] * kG[j][c] * partial[((i * N + j) * kChannels + ci) * kChannels + co];
          dw[(a * 3 + c) * 256 + ci * kChannels + co] = static_cast<float>(sum);
        }
}

// The forward pass (input x) or the input gradient (dy, padded by 2 - the forward padding, convolved with the turned
// filter) with F(tile, 3x3).
void forwardTiles(WinogradTile tile, const TileGeom& tg, const TileRowsIo& io, const float* w, bool turned,
                  const float* bias, bool relu) {
  if (tile == WinogradTile::k4x4) tileRows<4>(tg, io, transformFilter<4>(w, turned), bias, relu);
  else tileRows<2>(tg, io, transformFilter<2>(w, turned), bias, relu);
}

}  // namespace

bool ownWinogradFits(const ConvGeom& g) {
  return g.depthMult == 0 && g.c == kChannels && g.oc == kChannels && g.kh == 3 && g.kw == 3 && g.sh == 1 &&
         g.sw == 1 && g.dh == 1 && g.dw == 1 && g.pt >= 0 && g.pt <= 2 && g.pl >= 0 && g.pl <= 2 && g.oh > 0 &&
         g.ow > 0;
}

void ownWinogradForward(WinogradTile tile, const ConvGeom& g, const float* x, const float* w, const float* bias,
                        float* y, bool relu) {
  forwardTiles(tile, forwardGeom(g), TileRowsIo{x, nullptr, y, false, nullptr}, w, false, bias, relu);
}

void ownWinogradForwardMaxPool(WinogradTile tile, const ConvGeom& g, const float* x, const float* w,
                               const float* bias, float* pooled, bool relu, Code* codes) {
  forwardTiles(tile, forwardGeom(g), TileRowsIo{x, nullptr, pooled, true, codes}, w, false, bias, relu);
}

void ownWinogradBackwardData(WinogradTile tile, const ConvGeom& g, const float* dy, const float* w, float* dx) {
  forwardTiles(tile, backwardDataGeom(g), TileRowsIo{dy, nullptr, dx, false, nullptr}, w, true, nullptr, false);
}

void ownWinogradBackwardDataPooled(WinogradTile tile, const ConvGeom& g, const PooledGrad& dy, const float* w,
                                   float* dx) {
  forwardTiles(tile, backwardDataGeom(g), TileRowsIo{nullptr, &dy, dx, false, nullptr}, w, true, nullptr, false);
}

void ownWinogradBackwardFilter(WinogradTile tile, const ConvGeom& g, const float* x, const float* dy,
                               const PooledGrad* dyPooled, float* dw) {
  if (tile == WinogradTile::k4x4) backwardFilter<4>(g, x, dy, dyPooled, dw);
  else backwardFilter<2>(g, x, dy, dyPooled, dw);
}

}  // namespace pn
