// A separable convolution layer's forward pass in one kernel, for inference: the depthwise 3x3 (stride 1, 'same'
// padding, one filter per channel), then the 1x1 convolution with its bias and ReLU. oneDNN runs them as two
// primitives, so the depthwise output (as large as the layer's input) goes out to memory and is read back; here
// each thread takes a few rows of an image at a time, keeps their depthwise output in its own cache-sized buffer
// and runs the 1x1 convolution from there. In the seed model's prediction on a 2-core AVX-512 Xeon, 32x75x75x32 -> 32
// took 2.4 + 3.3 ms as the two primitives and 4.6 ms here; the whole prediction gained about 3%.
// Training keeps the two primitives: its gradient needs the depthwise output. The file also has the depthwise
// filter's gradient for training (DepthwiseFilterGrad3x3), in place of oneDNN's.
#include <algorithm>
#include <vector>

#include "common.h"

namespace pn {
namespace {

// The 1x1 convolution's register block: kPixels pixels by kOutParts vectors of outputs, kept in registers over the
// input channels. AVX-512 has 32 vector registers (24 sums), AVX2 and SSE 16 (12 sums, 2 weights, 1 broadcast).
constexpr int kOutParts = 2;
#if defined(__AVX512F__)
constexpr int kPixels = 12;
#else
constexpr int kPixels = 6;
#endif
// About how many pixels' depthwise output a thread keeps before the 1x1 convolution reads it back.
constexpr int64_t kChunkPixels = 600;

struct SeparableGeom {
  int64_t n, h, w, ci, co;
};

// The depthwise output of one pixel in column col, for kLanes channels; in[i] points at the channels of input row
// i of the window (a zero row in the padding) and the columns outside the image count as zeros.
inline FloatsV depthwiseEdgePixel(const float* const in[3], int64_t col, const SeparableGeom& g, const FloatsV taps[9]) {
  FloatsV acc = {};
  for (int i = 0; i < 3; i++) {
    const float* p = in[i] + col * g.ci;
    if (col > 0) acc += loadV(p - g.ci) * taps[i * 3];
    acc += loadV(p) * taps[i * 3 + 1];
    if (col + 1 < g.w) acc += loadV(p + g.ci) * taps[i * 3 + 2];
  }
  return acc;
}

// One row of the depthwise output, d[col, c]; in[i]: input row i of the window.
void depthwiseRow(const float* const in[3], const SeparableGeom& g, const float* filter, float* d) {
  for (int64_t k = 0; k < g.ci; k += kLanes) {
    FloatsV taps[9];
    for (int t = 0; t < 9; t++) taps[t] = loadV(filter + t * g.ci + k);
    const float* ink[3] = {in[0] + k, in[1] + k, in[2] + k};
    storeV(d + k, depthwiseEdgePixel(ink, 0, g, taps));
    for (int64_t col = 1; col + 1 < g.w; col++) {
      FloatsV acc = {};
      for (int i = 0; i < 3; i++) {
        const float* p = ink[i] + col * g.ci;
        acc += loadV(p - g.ci) * taps[i * 3] + loadV(p) * taps[i * 3 + 1] + loadV(p + g.ci) * taps[i * 3 + 2];
      }
      storeV(d + col * g.ci + k, acc);
    }
    if (g.w > 1) storeV(d + (g.w - 1) * g.ci + k, depthwiseEdgePixel(ink, g.w - 1, g, taps));
  }
}

// y[p, o0 ..] = relu(bias + sum_c d[p, c] * w[c, o0 ..]) for P pixels and kOutParts vectors of outputs. ReLU keeps
// NaN, as tfjs's and oneDNN's do.
template <int P>
inline void pointwiseBlock(const float* d, const SeparableGeom& g, int64_t o0, const float* w, const float* bias,
                           float* y) {
  FloatsV acc[P][kOutParts];
  for (int q = 0; q < kOutParts; q++) {
    const FloatsV b = loadV(bias + o0 + q * kLanes);
    for (int p = 0; p < P; p++) acc[p][q] = b;
  }
  for (int64_t c = 0; c < g.ci; c++) {
    FloatsV wv[kOutParts];
    for (int q = 0; q < kOutParts; q++) wv[q] = loadV(w + c * g.co + o0 + q * kLanes);
    for (int p = 0; p < P; p++) {
      const float v = d[p * g.ci + c];
      for (int q = 0; q < kOutParts; q++) acc[p][q] += v * wv[q];
    }
  }
  const FloatsV zero = {};
  for (int p = 0; p < P; p++)
    for (int q = 0; q < kOutParts; q++) {
      const FloatsV a = acc[p][q];
      storeV(y + p * g.co + o0 + q * kLanes, (a > zero) | (a != a) ? a : zero);
    }
}

// The 1x1 convolution of `count` pixels of depthwise output. Where count is not a multiple of kPixels, the last
// block overlaps the one before it and writes the same values again (each pixel's sums run in the same order).
void pointwisePixels(const float* d, int64_t count, const SeparableGeom& g, const float* w, const float* bias,
                     float* y) {
  for (int64_t o0 = 0; o0 < g.co; o0 += kOutParts * kLanes) {
    if (count < kPixels) {
      for (int64_t p = 0; p < count; p++) pointwiseBlock<1>(d + p * g.ci, g, o0, w, bias, y + p * g.co);
      continue;
    }
    for (int64_t p = 0;; p += kPixels) {
      p = std::min(p, count - kPixels);
      pointwiseBlock<kPixels>(d + p * g.ci, g, o0, w, bias, y + p * g.co);
      if (p + kPixels >= count) break;
    }
  }
}

void separableForward(const SeparableGeom& g, const float* x, const float* depthwise, const float* pointwise,
                      const float* bias, float* y) {
  const int64_t rowsPerChunk = std::max<int64_t>(1, std::min(g.h, kChunkPixels / g.w));
  const int64_t chunks = (g.h + rowsPerChunk - 1) / rowsPerChunk;
  const int64_t rowFloats = g.w * g.ci;
#pragma omp parallel
  {
    std::vector<float> d(static_cast<size_t>(rowsPerChunk * rowFloats)), zeros(static_cast<size_t>(rowFloats), 0.f);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < g.n * chunks; item++) {
      const int64_t b = item / chunks, r0 = item % chunks * rowsPerChunk, r1 = std::min(g.h, r0 + rowsPerChunk);
      for (int64_t r = r0; r < r1; r++) {
        const float* in[3];
        for (int i = 0; i < 3; i++) {
          const int64_t xr = r + i - 1;
          in[i] = xr >= 0 && xr < g.h ? x + (b * g.h + xr) * rowFloats : zeros.data();
        }
        depthwiseRow(in, g, depthwise, d.data() + (r - r0) * rowFloats);
      }
      pointwisePixels(d.data(), (r1 - r0) * g.w, g, pointwise, bias, y + (b * g.h + r0) * g.w * g.co);
    }
  }
}

Napi::Value SeparableConvBiasRelu(const Napi::CallbackInfo& info) {
  // (x, depthwise [3,3,ci,1], pointwise [1,1,ci,co], bias [co], y, params [n, h, w, ci, co]) -> whether it ran:
  // false where this build's vectors do not divide the channels (the caller then runs the two convolutions).
  auto p = ints(info[5]);
  if (p.size() != 5) throw std::runtime_error("separableConvBiasRelu parameters: expected 5 integers");
  const SeparableGeom g{p[0], p[1], p[2], p[3], p[4]};
  if (g.ci % kLanes != 0 || g.co % (kOutParts * kLanes) != 0) return Napi::Boolean::New(info.Env(), false);
  separableForward(g, f32(info[0]), f32(info[1]), f32(info[2]), f32(info[3]), f32(info[4]));
  return Napi::Boolean::New(info.Env(), true);
}

// The depthwise 3x3 filter's gradient (stride 1, 'same' padding, one filter per channel), channels last:
// dw[ky][kx][c] = sum over n, y, x of x[n, y + ky - 1, x + kx - 1, c] * dy[n, y, x, c]. Each thread sums its rows of
// dy into its own 9 x c partial sums, two columns at a time into separate sums so that the multiply-adds do not wait
// on each other; the partials are added up at the end.
void depthwiseFilterGradRows(const float* x, const float* dy, int64_t h, int64_t w, int64_t c, int64_t row,
                             float* acc) {
  const int64_t b = row / h, y = row % h, rowFloats = w * c;
  const float* dyRow = dy + row * rowFloats;
  for (int ky = 0; ky < 3; ky++) {
    const int64_t sy = y + ky - 1;
    if (sy < 0 || sy >= h) continue;
    const float* xRow = x + (b * h + sy) * rowFloats;
    for (int64_t k = 0; k < c; k += kLanes) {
      float* a = acc + ky * 3 * c + k;
      FloatsV s0 = {}, s1 = {}, s2 = {}, t0 = {}, t1 = {}, t2 = {};
      // Column 0 has no left neighbour and column w - 1 no right one.
      const FloatsV g0 = loadV(dyRow + k);
      s1 += loadV(xRow + k) * g0;
      if (w > 1) s2 += loadV(xRow + c + k) * g0;
      int64_t col = 1;
      for (; col + 2 < w; col += 2) {
        const float* p = xRow + col * c + k;
        const FloatsV g = loadV(dyRow + col * c + k), gn = loadV(dyRow + (col + 1) * c + k);
        const FloatsV left = loadV(p - c), mid = loadV(p), right = loadV(p + c), far = loadV(p + 2 * c);
        s0 += left * g;
        s1 += mid * g;
        s2 += right * g;
        t0 += mid * gn;
        t1 += right * gn;
        t2 += far * gn;
      }
      for (; col < w; col++) {
        const float* p = xRow + col * c + k;
        const FloatsV g = loadV(dyRow + col * c + k);
        s0 += loadV(p - c) * g;
        s1 += loadV(p) * g;
        if (col + 1 < w) s2 += loadV(p + c) * g;
      }
      storeV(a, loadV(a) + s0 + t0);
      storeV(a + c, loadV(a + c) + s1 + t1);
      storeV(a + 2 * c, loadV(a + 2 * c) + s2 + t2);
    }
  }
}

Napi::Value DepthwiseFilterGrad3x3(const Napi::CallbackInfo& info) {
  // (x, dy, dw [3,3,c,1], params [n, h, w, c]) -> whether it ran: false where this build's vectors do not divide c
  // (the caller then runs oneDNN's).
  auto p = ints(info[3]);
  if (p.size() != 4) throw std::runtime_error("depthwiseFilterGrad3x3 parameters: expected 4 integers");
  const int64_t n = p[0], h = p[1], w = p[2], c = p[3];
  if (c % kLanes != 0 || w < 1) return Napi::Boolean::New(info.Env(), false);
  const float* x = f32(info[0]);
  const float* dy = f32(info[1]);
  float* dw = f32(info[2]);
  const int threads = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(threads * 9 * c), 0.f);
#pragma omp parallel
  {
    float* acc = partial.data() + omp_get_thread_num() * 9 * c;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n * h; row++) depthwiseFilterGradRows(x, dy, h, w, c, row, acc);
  }
  for (int64_t i = 0; i < 9 * c; i++) {
    float sum = 0.f;
    for (int t = 0; t < threads; t++) sum += partial[t * 9 * c + i];
    dw[i] = sum;
  }
  return Napi::Boolean::New(info.Env(), true);
}

}  // namespace

void registerSeparable(Napi::Env env, Napi::Object exports) {
  exports.Set("depthwiseFilterGrad3x3", Napi::Function::New(env, DepthwiseFilterGrad3x3));
  exports.Set("separableConvBiasRelu", Napi::Function::New(env, SeparableConvBiasRelu));
}

}  // namespace pn
