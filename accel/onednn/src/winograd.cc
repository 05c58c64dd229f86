// Winograd F(2x2, 3x3) for the 16 -> 16 channel 3x3 convolutions with stride 1 (block 1's second layer, the
// largest of the network), the forward pass and both gradients, for CPUs where oneDNN has no Winograd of its own
// (it has one on AVX-512 only). Each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A over a 4x4 input patch: 16
// products of 16 x 16 channel matrices per tile instead of 36 taps per output pixel, 2.25x fewer multiply-adds. One
// call of the tile-row loop transforms a row of input patches into a per-thread buffer, multiplies, and transforms
// the row back, so the transformed data stays in cache; the filter gradient is the same algorithm transposed.
// conv.cc times each direction against the direct convolution and keeps whichever is clearly faster: on a 2-core
// Xeon capped at AVX2, 32x150x150x16, forward 21.4 -> 14.6 ms, input gradient 17.7 -> 14.4, filter gradient
// 26.3 -> 18.9. With AVX-512, oneDNN's direct forward and input gradient and its own Winograd filter gradient stay
// ahead (13.0, 12.2, 9.1 ms against 13.6, 13.9, 13.2): the transforms read the activations at memory speed.
#include "winograd.h"

#include <algorithm>
#include <array>
#include <vector>

namespace pn {
namespace {

constexpr int kChannels = 16;
// Tiles per register block of the products: AVX-512 keeps 12 tiles x 1 vector of 16 sums, AVX2 6 x 2 (12 of its 16
// registers), SSE 3 x 4.
constexpr int kTiles = 12 / kParts16;

// Where the tiles of one call sit: the input (the image, or dy for the input gradient), the output, and the input
// row and column of output (0, 0)'s window, minus one (the padding at the top and left).
struct TileGeom {
  int64_t n, inH, inW, outH, outW, padTop, padLeft;
  int64_t tileRows() const { return (outH + 1) / 2; }
  int64_t tileCols() const { return (outW + 1) / 2; }
};

// U[xi][ci][co] = (G g G^T)[xi] for each channel pair, from a HWIO filter; `flipped` takes the filter turned 180
// degrees with its channels swapped (what the input gradient convolves dy with). In double, then rounded once.
std::vector<float> transformFilter(const float* w, bool flipped) {
  std::vector<float> u(16 * kChannels * kChannels);
  for (int ci = 0; ci < kChannels; ci++)
    for (int co = 0; co < kChannels; co++) {
      double g[9], t[12];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
          g[a * 3 + b] = flipped ? w[((2 - a) * 3 + (2 - b)) * 256 + co * kChannels + ci]
                                 : w[(a * 3 + b) * 256 + ci * kChannels + co];
      for (int b = 0; b < 3; b++) {
        const double g0 = g[b], g1 = g[3 + b], g2 = g[6 + b];
        t[b] = g0;
        t[3 + b] = (g0 + g1 + g2) / 2;
        t[6 + b] = (g0 - g1 + g2) / 2;
        t[9 + b] = g2;
      }
      for (int i = 0; i < 4; i++) {
        const double t0 = t[i * 3], t1 = t[i * 3 + 1], t2 = t[i * 3 + 2];
        const double row[4] = {t0, (t0 + t1 + t2) / 2, (t0 - t1 + t2) / 2, t2};
        for (int j = 0; j < 4; j++) u[((i * 4 + j) * kChannels + ci) * kChannels + co] = static_cast<float>(row[j]);
      }
    }
  return u;
}

// V[xi][tile][c] = (B^T d B)[xi] for the row of tiles whose 4 input rows are rows[0..3] (a zero row outside the
// input); columns outside the input read as zeros.
void inputTransform(const float* const rows[4], const TileGeom& g, float* v) {
  const FloatsV zero = {};
  const int64_t tiles = g.tileCols();
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV d[16];
      for (int j = 0; j < 4; j++) {
        const int64_t col = 2 * tc - g.padLeft + j;
        const bool inside = col >= 0 && col < g.inW;
        for (int i = 0; i < 4; i++) d[i * 4 + j] = inside ? loadV(rows[i] + col * kChannels + q * kLanes) : zero;
      }
      FloatsV t[16];
      for (int j = 0; j < 4; j++) {
        t[j] = d[j] - d[8 + j];
        t[4 + j] = d[4 + j] + d[8 + j];
        t[8 + j] = d[8 + j] - d[4 + j];
        t[12 + j] = d[4 + j] - d[12 + j];
      }
      for (int i = 0; i < 4; i++) {
        const FloatsV* r = t + i * 4;
        const FloatsV out[4] = {r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]};
        for (int j = 0; j < 4; j++) storeV(v + ((i * 4 + j) * tiles + tc) * kChannels + q * kLanes, out[j]);
      }
    }
}

// M[tile][xi][co] = sum over ci of V[xi][tile][ci] U[xi][ci][co] for P tiles, the sums in registers.
template <int P>
inline void productBlock(const float* v, const float* u, float* m) {
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
    for (int q = 0; q < kParts16; q++) storeV(m + p * 256 + q * kLanes, acc[p][q]);
}

// The products of a row of tiles. Where the tile count is not a multiple of kTiles, the last block overlaps the one
// before it and writes the same values again.
void products(const float* v, const float* u, int64_t tiles, float* m) {
  for (int xi = 0; xi < 16; xi++) {
    const float* vx = v + xi * tiles * kChannels;
    const float* ux = u + xi * 256;
    float* mx = m + xi * kChannels;
    if (tiles < kTiles) {
      for (int64_t t = 0; t < tiles; t++) productBlock<1>(vx + t * kChannels, ux, mx + t * 256);
      continue;
    }
    for (int64_t t = 0;; t += kTiles) {
      t = std::min(t, tiles - kTiles);
      productBlock<kTiles>(vx + t * kChannels, ux, mx + t * 256);
      if (t + kTiles >= tiles) break;
    }
  }
}

// Output rows out[0] and out[1] (null past the output's last row) = A^T M A (+ bias, ReLU keeping NaN) of a row of
// tiles; the column past an odd width is not written.
void outputTransform(const float* m, const TileGeom& g, const float* bias, bool relu, float* const out[2]) {
  const FloatsV zero = {};
  const int64_t tiles = g.tileCols();
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV mm[16];
      for (int k = 0; k < 16; k++) mm[k] = loadV(m + tc * 256 + k * kChannels + q * kLanes);
      FloatsV t0[4], t1[4];
      for (int j = 0; j < 4; j++) {
        t0[j] = mm[j] + mm[4 + j] + mm[8 + j];
        t1[j] = mm[4 + j] - mm[8 + j] - mm[12 + j];
      }
      const FloatsV b = bias ? loadV(bias + q * kLanes) : zero;
      FloatsV y[2][2] = {{t0[0] + t0[1] + t0[2] + b, t0[1] - t0[2] - t0[3] + b},
                         {t1[0] + t1[1] + t1[2] + b, t1[1] - t1[2] - t1[3] + b}};
      for (int r = 0; r < 2; r++) {
        if (!out[r]) continue;
        for (int c = 0; c < 2 && 2 * tc + c < g.outW; c++) {
          FloatsV a = y[r][c];
          if (relu) a = (a > zero) | (a != a) ? a : zero;
          storeV(out[r] + (2 * tc + c) * kChannels + q * kLanes, a);
        }
      }
    }
}

// The 4 input rows under tile row t of image b; `zeros` (a row of them) stands in for rows outside the input.
std::array<const float*, 4> patchRows(const TileGeom& g, const float* x, int64_t b, int64_t t, const float* zeros) {
  std::array<const float*, 4> rows;
  for (int i = 0; i < 4; i++) {
    const int64_t r = 2 * t - g.padTop + i;
    rows[i] = r >= 0 && r < g.inH ? x + (b * g.inH + r) * g.inW * kChannels : zeros;
  }
  return rows;
}

void tileRows(const TileGeom& g, const float* x, const std::vector<float>& u, const float* bias, bool relu,
              float* y) {
  const int64_t tilesH = g.tileRows(), tiles = g.tileCols();
  const int64_t inRow = g.inW * kChannels, outRow = g.outW * kChannels;
#pragma omp parallel
  {
    std::vector<float> v(static_cast<size_t>(16 * tiles * kChannels)), m(static_cast<size_t>(tiles * 256)),
        zeros(static_cast<size_t>(inRow), 0.f);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < g.n * tilesH; item++) {
      const int64_t b = item / tilesH, t = item % tilesH;
      inputTransform(patchRows(g, x, b, t, zeros.data()).data(), g, v.data());
      products(v.data(), u.data(), tiles, m.data());
      float* first = y + (b * g.outH + 2 * t) * outRow;
      float* const out[2] = {first, 2 * t + 1 < g.outH ? first + outRow : nullptr};
      outputTransform(m.data(), g, bias, relu, out);
    }
  }
}

// dM[xi][tile][c] = (A dY A^T)[xi] for the row of tiles whose output rows are dy0 and dy1 (dy1 null past the
// output's last row): the output transform's transpose. The column past an odd width reads as zero.
void outputGradTransform(const float* dy0, const float* dy1, const TileGeom& g, float* dm) {
  const FloatsV zero = {};
  const int64_t tiles = g.tileCols();
  for (int64_t tc = 0; tc < tiles; tc++)
    for (int q = 0; q < kParts16; q++) {
      FloatsV d[2][2];
      for (int c = 0; c < 2; c++) {
        const bool inside = 2 * tc + c < g.outW;
        const int64_t at = (2 * tc + c) * kChannels + q * kLanes;
        d[0][c] = inside ? loadV(dy0 + at) : zero;
        d[1][c] = inside && dy1 ? loadV(dy1 + at) : zero;
      }
      // Rows (A dY): dy0, dy0 + dy1, dy0 - dy1, -dy1; then the same along the columns.
      FloatsV r[4][2];
      for (int c = 0; c < 2; c++) {
        r[0][c] = d[0][c];
        r[1][c] = d[0][c] + d[1][c];
        r[2][c] = d[0][c] - d[1][c];
        r[3][c] = zero - d[1][c];
      }
      for (int i = 0; i < 4; i++) {
        const FloatsV out[4] = {r[i][0], r[i][0] + r[i][1], r[i][0] - r[i][1], zero - r[i][1]};
        for (int j = 0; j < 4; j++) storeV(dm + ((i * 4 + j) * tiles + tc) * kChannels + q * kLanes, out[j]);
      }
    }
}

// Input channels per register block of the filter gradient's products: with AVX-512 all 16 (16 sums, one vector of
// outputs each), with AVX2 4 (8 sums of two vectors each), so the sums, dM's vectors and a broadcast fit the registers.
constexpr int kGradChannels = kParts16 == 1 ? 16 : 4;

// s[xi][ci][co] += sum over the row's tiles of V[xi][tile][ci] dM[xi][tile][co], in float.
void filterGradProducts(const float* v, const float* dm, int64_t tiles, float* s) {
  for (int xi = 0; xi < 16; xi++) {
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

}  // namespace

bool winograd2x2Fits(const ConvGeom& g) {
  return g.depthMult == 0 && g.c == kChannels && g.oc == kChannels && g.kh == 3 && g.kw == 3 && g.sh == 1 &&
         g.sw == 1 && g.dh == 1 && g.dw == 1 && g.pt >= 0 && g.pt <= 2 && g.pl >= 0 && g.pl <= 2 && g.oh > 0 &&
         g.ow > 0;
}

void winograd2x2Forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y, bool relu) {
  tileRows({g.n, g.h, g.w, g.oh, g.ow, g.pt, g.pl}, x, transformFilter(w, false), bias, relu, y);
}

// dx is the convolution of dy with the turned filter, padded by 2 - the forward padding.
void winograd2x2BackwardData(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  tileRows({g.n, g.oh, g.ow, g.h, g.w, 2 - g.pt, 2 - g.pl}, dy, transformFilter(w, true), nullptr, false, dx);
}

// Tile rows whose sums a thread keeps in float before adding them into its double ones: float over a few hundred
// tiles, double over the whole batch (180,000 tiles at 32x150x150).
constexpr int64_t kRowsPerFlush = 8;

// dW = G^T S G for each channel pair, S the sum over all tiles of V^T dM (the forward pass transposed), per thread
// and then added in thread order, so the result does not depend on timing.
void winograd2x2BackwardFilter(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  const TileGeom tg{g.n, g.h, g.w, g.oh, g.ow, g.pt, g.pl};
  const int64_t tilesH = tg.tileRows(), tiles = tg.tileCols();
  const int64_t inRow = g.w * kChannels, outRow = g.ow * kChannels;
  constexpr size_t kSums = 16 * kChannels * kChannels;
  const int threads = omp_get_max_threads();
  std::vector<double> partial(threads * kSums, 0.0);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> v(static_cast<size_t>(16 * tiles * kChannels)), dm(v.size()),
        zeros(static_cast<size_t>(inRow), 0.f), rowSums(kSums, 0.f);
    double* s = partial.data() + omp_get_thread_num() * kSums;
    int64_t rowsSummed = 0;
    auto flush = [&] {
      for (size_t k = 0; k < kSums; k++) s[k] += rowSums[k];
      std::fill(rowSums.begin(), rowSums.end(), 0.f);
    };
#pragma omp for schedule(static) nowait
    for (int64_t item = 0; item < g.n * tilesH; item++) {
      const int64_t b = item / tilesH, t = item % tilesH;
      inputTransform(patchRows(tg, x, b, t, zeros.data()).data(), tg, v.data());
      const float* dy0 = dy + (b * g.oh + 2 * t) * outRow;
      outputGradTransform(dy0, 2 * t + 1 < g.oh ? dy0 + outRow : nullptr, tg, dm.data());
      filterGradProducts(v.data(), dm.data(), tiles, rowSums.data());
      if (++rowsSummed % kRowsPerFlush == 0) flush();
    }
    flush();
  }
  for (int t = 1; t < threads; t++)
    for (size_t k = 0; k < kSums; k++) partial[k] += partial[t * kSums + k];
  // G^T S G: G's rows are (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1).
  static const double kG[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  for (int ci = 0; ci < kChannels; ci++)
    for (int co = 0; co < kChannels; co++)
      for (int a = 0; a < 3; a++)
        for (int c = 0; c < 3; c++) {
          double sum = 0;
          for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
              sum += kG[i][a] * kG[j][c] * partial[((i * 4 + j) * kChannels + ci) * kChannels + co];
          dw[(a * 3 + c) * 256 + ci * kChannels + co] = static_cast<float>(sum);
        }
}

}  // namespace pn
