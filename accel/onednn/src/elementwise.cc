// Element-wise and reduction kernels that dominate a training step once convolutions are
// fast: tfjs's CPU backend runs them in generic JS (batch-norm and its gradient broadcast
// [C] against [N,H,W,C] and reduce over N,H,W).
#include "common.h"
#include "pool.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <omp.h>
#include <type_traits>
#include <vector>

namespace pn {
namespace {

// Below this many elements a memory-bound loop is not worth waking a second thread for
// (and on a busy machine an OpenMP barrier can cost a whole scheduler tick).
static const int64_t kParallelMin = [] {
  const char* v = std::getenv("PNEUMO_NATIVE_PARALLEL_MIN");
  return v ? std::atoll(v) : int64_t(1) << 18;
}();

// Calls f(std::integral_constant<int, W>()) with W = c for the channel counts whose per-channel sums a loop keeps in
// registers (8, 16, 32, 64), and W = 0 (the loop for any width) for the others.
template <typename F>
void withChannelWidth(int64_t c, F f) {
  switch (c) {
    case 8: f(std::integral_constant<int, 8>()); break;
    case 16: f(std::integral_constant<int, 16>()); break;
    case 32: f(std::integral_constant<int, 32>()); break;
    case 64: f(std::integral_constant<int, 64>()); break;
    default: f(std::integral_constant<int, 0>());
  }
}

template <BinaryOp OP>
inline float apply(float a, float b) {
  if (OP == BinaryOp::kAdd) return a + b;
  if (OP == BinaryOp::kSub) return a - b;
  if (OP == BinaryOp::kMul) return a * b;
  if (OP == BinaryOp::kDiv) return a / b;
  float d = a - b;
  return d * d;
}

template <BinaryOp OP>
void blockLoop(const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  if (sa == 1 && sb == 1) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) y[j] = apply<OP>(a[j], b[j]);
  } else if (sa == 1) {
    const float bv = b[0];
#pragma omp simd
    for (int64_t j = 0; j < n; j++) y[j] = apply<OP>(a[j], bv);
  } else if (sb == 1) {
    const float av = a[0];
#pragma omp simd
    for (int64_t j = 0; j < n; j++) y[j] = apply<OP>(av, b[j]);
  } else {
    const float v = apply<OP>(a[0], b[0]);
    for (int64_t j = 0; j < n; j++) y[j] = v;
  }
}

// Where an operand's block starts (see Broadcast), and whether it advances along the block (stride 1) or not.
inline const float* operandBlock(const float* p, int mode, int64_t blk, int64_t inner, int64_t& stride) {
  switch (static_cast<Broadcast>(mode)) {
    case Broadcast::kFull: stride = 1; return p + blk * inner;
    case Broadcast::kPerElementOfBlock: stride = 1; return p;
    case Broadcast::kPerBlock: stride = 0; return p + blk;
    default: stride = 0; return p;  // Broadcast::kScalar
  }
}

template <BinaryOp OP>
void binary(const float* a, int ma, const float* b, int mb, float* y, int64_t blocks, int64_t inner) {
  const int64_t chunk = 4096;
  if (blocks >= 2 * omp_get_max_threads() || inner < 2 * chunk || blocks * inner <= kParallelMin) {
#pragma omp parallel for schedule(static) if (blocks * inner > kParallelMin)
    for (int64_t blk = 0; blk < blocks; blk++) {
      int64_t sa, sb;
      const float* pa = operandBlock(a, ma, blk, inner, sa);
      const float* pb = operandBlock(b, mb, blk, inner, sb);
      blockLoop<OP>(pa, sa, pb, sb, y + blk * inner, inner);
    }
  } else {
    // Few, long blocks: split each block across threads.
    for (int64_t blk = 0; blk < blocks; blk++) {
      int64_t sa, sb;
      const float* pa = operandBlock(a, ma, blk, inner, sa);
      const float* pb = operandBlock(b, mb, blk, inner, sb);
      float* py = y + blk * inner;
      int64_t pieces = (inner + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (inner > kParallelMin)
      for (int64_t c = 0; c < pieces; c++) {
        int64_t s = c * chunk, e = std::min(inner, s + chunk);
        blockLoop<OP>(pa + s * sa, sa, pb + s * sb, sb, py + s, e - s);
      }
    }
  }
}

Napi::Value Binary(const Napi::CallbackInfo& info) {
  // (op, a, modeA, b, modeB, y, blocks, inner)
  int op = info[0].As<Napi::Number>().Int32Value();
  const float* a = f32(info[1]);
  int ma = info[2].As<Napi::Number>().Int32Value();
  const float* b = f32(info[3]);
  int mb = info[4].As<Napi::Number>().Int32Value();
  float* y = f32(info[5]);
  int64_t blocks = info[6].As<Napi::Number>().Int64Value();
  int64_t inner = info[7].As<Napi::Number>().Int64Value();
  switch (static_cast<BinaryOp>(op)) {
    case BinaryOp::kAdd: binary<BinaryOp::kAdd>(a, ma, b, mb, y, blocks, inner); break;
    case BinaryOp::kSub: binary<BinaryOp::kSub>(a, ma, b, mb, y, blocks, inner); break;
    case BinaryOp::kMul: binary<BinaryOp::kMul>(a, ma, b, mb, y, blocks, inner); break;
    case BinaryOp::kDiv: binary<BinaryOp::kDiv>(a, ma, b, mb, y, blocks, inner); break;
    case BinaryOp::kSquaredDiff: binary<BinaryOp::kSquaredDiff>(a, ma, b, mb, y, blocks, inner); break;
    default: throw std::runtime_error("unknown binary op");
  }
  return info.Env().Undefined();
}

Napi::Value Unary(const Napi::CallbackInfo& info) {
  // (op, x, y, alpha)
  int op = info[0].As<Napi::Number>().Int32Value();
  const float* x = f32(info[1]);
  float* y = f32(info[2]);
  float alpha = info[3].As<Napi::Number>().FloatValue();
  int64_t n = info[2].As<Napi::Float32Array>().ElementLength();
  switch (static_cast<UnaryOp>(op)) {
    case UnaryOp::kRelu:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) {
        const float positive = x[i] > 0.f ? x[i] : 0.f;  // Math.max(0, x), in two selects as stepOf
        y[i] = x[i] != x[i] ? x[i] : positive;
      }
      break;
    case UnaryOp::kStep:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = stepOf(x[i], alpha);
      break;
    case UnaryOp::kSqrt:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = std::sqrt(x[i]);
      break;
    case UnaryOp::kSquare:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
      break;
    case UnaryOp::kRsqrt:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(x[i])));  // as tfjs: in double
      break;
    case UnaryOp::kNeg:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = -x[i];
      break;
    case UnaryOp::kFloor:
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; i++) y[i] = std::floor(x[i]);
      break;
    default: throw std::runtime_error("unknown unary op");
  }
  return info.Env().Undefined();
}

// ClipByValue as tfjs's CPU kernel: x > hi ? hi : x < lo ? lo : x, NaN kept (the augmentation clips every
// training batch to [0, 1]; tfjs's kernel took 3.4 ms of a 32x150x150 batch on one thread).
Napi::Value Clip(const Napi::CallbackInfo& info) {
  // (x, y, lo, hi)
  const float* x = f32(info[0]);
  float* y = f32(info[1]);
  const float lo = info[2].As<Napi::Number>().FloatValue();
  const float hi = info[3].As<Napi::Number>().FloatValue();
  const int64_t n = info[1].As<Napi::Float32Array>().ElementLength();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) y[i] = x[i] > hi ? hi : (x[i] < lo ? lo : x[i]);
  return info.Env().Undefined();
}

// ReLU's gradient dy * step(x) in one pass instead of two (Step, then Multiply over the same
// activation-sized tensors). Same values as tfjs: NaN where x is NaN, dy where x > 0, dy * 0
// (keeping -0 and NaN for infinite dy) elsewhere.
Napi::Value ReluGrad(const Napi::CallbackInfo& info) {
  // (dy, x, y)
  const float* dy = f32(info[0]);
  const float* x = f32(info[1]);
  float* y = f32(info[2]);
  int64_t n = info[2].As<Napi::Float32Array>().ElementLength();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    y[i] = dy[i] * stepOf(x[i]);
  }
  return info.Env().Undefined();
}

// A loop over rows [r0, r1) in one piece.
struct WholeRange {
  template <typename F>
  void forSegments(int64_t r0, int64_t r1, F f) const {
    f(r0, r1);
  }
};

// The dy a batch-norm gradient pass reads, one row of c channels per pixel: dy itself.
struct DyRows : WholeRange {
  const float* dy;
  const float* row(int64_t r, int64_t c) const { return dy + r * c; }
  float at(int64_t i) const { return dy[i]; }
};

// The same after a 2x2 / 2 max pooling paired with the batch-norm (BATCH_NORM_MAX_POOL_TRAIN): MaxPoolGrad's dx,
// made from the pooling's dy and codes one image row at a time, as a pass reaches it, into a buffer of the thread's
// own (one per thread: make it inside the parallel region), instead of written out whole (MaxPoolGrad's dx) and
// read back by both passes. Rows are valid only inside forSegments' piece, which never crosses an image row.
class PooledDyRows {
 public:
  PooledDyRows(const PooledGrad& p, int64_t h, int64_t w) : p_(p), h_(h), w_(w), buffer_(w * p.c) {}
  template <typename F>
  void forSegments(int64_t r0, int64_t r1, F f) {
    for (int64_t s0 = r0; s0 < r1;) {
      const int64_t imageRow = s0 / w_, s1 = std::min(r1, (imageRow + 1) * w_);
      expandPooledGradRow(p_, imageRow / h_, imageRow % h_, w_, buffer_.data());
      first_ = imageRow * w_ * p_.c;
      f(s0, s1);
      s0 = s1;
    }
  }
  const float* row(int64_t r, int64_t c) const { return buffer_.data() + (r * c - first_); }
  float at(int64_t i) const { return buffer_[i - first_]; }

 private:
  PooledGrad p_;
  int64_t h_, w_, first_ = 0;
  std::vector<float> buffer_;
};

// Calls f(makeRows) where makeRows() gives a thread its reader of dy (info[0]): PooledDyRows where info[at] holds
// codes and info[at + 1] the pooling's parameters (x, of n elements in c channels, its input), else DyRows.
template <typename F>
void withDyRows(const Napi::CallbackInfo& info, size_t at, int64_t n, int64_t c, const char* kernel, F f) {
  if (info.Length() <= at + 1 || info[at].IsUndefined()) {
    const DyRows rows{{}, f32(info[0])};
    return f([&] { return rows; });
  }
  const PoolGeom g = PoolGeom::from(ints(info[at + 1]));
  if (g.n * g.h * g.w * g.c != n || g.c != c) throw std::runtime_error(std::string(kernel) + ": the pooling's input is not x");
  const PooledGrad pooled = PooledGrad::from(g, info[0], info[at], kernel);
  f([&] { return PooledDyRows(pooled, g.h, g.w); });
}

// Rows [r0, r1) of a loop over channels-last values whose value(i, j) (element i, channel j) is written out and
// summed per channel into out; with W channels fixed (W > 0) the sums stay in registers instead of being loaded
// and stored for every row (the generic loop ran the ReLU mask at about 60% of the memory bandwidth); W = 0: c wide.
// `segments` (PooledDyRows) may cut the range into pieces it prepares one at a time; the sums run on across them.
template <int W, typename Value, typename Segments = WholeRange>
void rowsWithChannelSums(int64_t c, int64_t r0, int64_t r1, double* out, Value value, Segments&& segments = {}) {
  constexpr int kRegisters = W > 0 ? W : 1;
  double acc[kRegisters] = {};
  double* sums = W > 0 ? acc : out;
  const int64_t width = W > 0 ? W : c;
  segments.forSegments(r0, r1, [&](int64_t s0, int64_t s1) {
    for (int64_t r = s0; r < s1; r++) {
#pragma omp simd
      for (int64_t j = 0; j < width; j++) sums[j] += value(r * width + j, j);
    }
  });
  if (W > 0)
    for (int j = 0; j < W; j++) out[j] += acc[j];
}

// A convolution + bias + ReLU layer's gradient through its output y, in one pass over channels-last dy and y:
// masked = dy * step(y) (as ReluGrad) and sums[c] = sum masked[., c], the bias's gradient. A separate Sum read
// all of masked again, for every conv layer on every step. Its sums are Sum's over masked to the bit
// (columnSumsByThread; tests/native-kernels.test.ts checks it).
Napi::Value ReluGradChannelSums(const Napi::CallbackInfo& info) {
  // (dy, y, masked, sums[C])
  const float* dy = f32(info[0]);
  const float* y = f32(info[1]);
  float* masked = f32(info[2]);
  float* sums = f32(info[3]);
  const int64_t c = info[3].As<Napi::Float32Array>().ElementLength();
  const int64_t n = info[1].As<Napi::Float32Array>().ElementLength();
  columnSumsByThread(n / c, c, n > kParallelMin, 1.0, sums, [&](int64_t r0, int64_t r1, double* acc) {
    withChannelWidth(c, [&](auto w) {
      rowsWithChannelSums<decltype(w)::value>(c, r0, r1, acc, [&](int64_t i, int64_t) { return masked[i] = dy[i] * stepOf(y[i]); });
    });
  });
  return info.Env().Undefined();
}

// ReluFilterGradOneChannel's sums for output rows [r0, r1) (each one image row), any geometry: out holds the
// filter's gradient, [KH * KW][OC] (HWIO with one input channel), then the bias's, [OC]. Each row is summed in
// float, as oneDNN's filter gradient does, and added to out in double.
void reluFilterGradRows(const ConvGeom& g, const float* x, const float* dy, const float* y, int64_t r0, int64_t r1,
                        double* out) {
  const int64_t taps = g.kh * g.kw;
  std::vector<float> sums(static_cast<size_t>((taps + 1) * g.oc)), mask(static_cast<size_t>(g.oc));
  float* bias = sums.data() + taps * g.oc;
  float* m = mask.data();
  for (int64_t row = r0; row < r1; row++) {
    const int64_t b = row / g.oh, r = row % g.oh;
    std::fill(sums.begin(), sums.end(), 0.f);
    for (int64_t col = 0; col < g.ow; col++) {
      const float* dr = dy + (row * g.ow + col) * g.oc;
      const float* yr = y + (row * g.ow + col) * g.oc;
#pragma omp simd
      for (int64_t k = 0; k < g.oc; k++) {
        m[k] = dr[k] * stepOf(yr[k]);
        bias[k] += m[k];
      }
      for (int64_t i = 0; i < g.kh; i++) {
        const int64_t xr = r * g.sh - g.pt + i * g.dh;
        if (xr < 0 || xr >= g.h) continue;  // padding: the tap reads zeros
        for (int64_t j = 0; j < g.kw; j++) {
          const int64_t xc = col * g.sw - g.pl + j * g.dw;
          if (xc < 0 || xc >= g.w) continue;
          const float v = x[(b * g.h + xr) * g.w + xc];
          float* tap = sums.data() + (i * g.kw + j) * g.oc;
#pragma omp simd
          for (int64_t k = 0; k < g.oc; k++) tap[k] += v * m[k];
        }
      }
    }
    for (size_t k = 0; k < sums.size(); k++) out[k] += sums[k];
  }
}

// The same for a 3x3 window and 16 output channels (the seed model's first layer), with the 16 channels as kParts16
// target-wide GCC vectors (FloatsV, common.h), so a row's ten sums stay in registers (and the window's interior
// columns skip the padding's checks): the generic loop above loads and stores them for every tap and pixel, and took
// longer than the mask pass and oneDNN's filter gradient.
void reluFilterGradRows3x3x16(const ConvGeom& g, const float* x, const float* dy, const float* y, int64_t r0,
                              int64_t r1, double* out) {
  const FloatsV zero = {}, one = zero + 1.f;
  const std::vector<float> zeros(static_cast<size_t>(g.w), 0.f);
  for (int64_t row = r0; row < r1; row++) {
    const int64_t b = row / g.oh, r = row % g.oh;
    // The window's three input rows; a row in the padding reads zeros.
    const float* in[3];
    for (int i = 0; i < 3; i++) {
      const int64_t xr = r * g.sh - g.pt + i * g.dh;
      in[i] = xr >= 0 && xr < g.h ? x + (b * g.h + xr) * g.w : zeros.data();
    }
    FloatsV taps[9][kParts16] = {}, bias[kParts16] = {};
    for (int64_t col = 0; col < g.ow; col++) {
      const int64_t at = (row * g.ow + col) * 16;
      FloatsV m[kParts16];
      for (int q = 0; q < kParts16; q++) {
        const FloatsV v = loadV(y + at + q * kLanes);
        m[q] = loadV(dy + at + q * kLanes) * (v != v ? v : (v > zero ? one : zero));  // ReluGrad's mask, NaN included
        bias[q] += m[q];
      }
      const int64_t c0 = col * g.sw - g.pl;
      const bool interior = c0 >= 0 && c0 + 2 * g.dw < g.w;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
          const int64_t xc = c0 + j * g.dw;
          if (!interior && (xc < 0 || xc >= g.w)) continue;  // a tap over the left or right padding
          const float v = in[i][xc];
          for (int q = 0; q < kParts16; q++) taps[i * 3 + j][q] += v * m[q];
        }
    }
    for (int t = 0; t < 9; t++)
      for (int q = 0; q < kParts16; q++)
        for (int k = 0; k < kLanes; k++) out[t * 16 + q * kLanes + k] += taps[t][q][k];
    for (int q = 0; q < kParts16; q++)
      for (int k = 0; k < kLanes; k++) out[9 * 16 + q * kLanes + k] += bias[q][k];
  }
}

// The filter and bias gradients of a convolution + bias + ReLU layer with one input channel (the first layer of a
// grayscale network), straight from the layer's output gradient dy and output y: the ReLU mask is applied on the
// fly instead of being written out (the ReLU mask pass and the filter gradient read 3 activation-sized tensors and
// wrote one; this reads two). Its input gradient is not needed as a rule and is left to the usual kernels.
Napi::Value ReluFilterGradOneChannel(const Napi::CallbackInfo& info) {
  // (x, dy, y, dw[KH*KW*OC], sums[OC], geom)
  const float* x = f32(info[0]);
  const float* dy = f32(info[1]);
  const float* y = f32(info[2]);
  float* dw = f32(info[3]);
  float* sums = f32(info[4]);
  const ConvGeom g = ConvGeom::from(ints(info[5]));
  if (g.c != 1 || g.depthMult != 0) throw std::runtime_error("reluFilterGradOneChannel: expected one input channel");
  const int64_t taps = g.kh * g.kw;
  std::vector<double> totals(static_cast<size_t>((taps + 1) * g.oc));
  const int64_t rows = g.n * g.oh;
  columnSumsByThread(rows, (taps + 1) * g.oc, rows * g.ow * g.oc > kParallelMin, 1.0, totals.data(),
                     [&](int64_t r0, int64_t r1, double* acc) {
                       if (g.kh == 3 && g.kw == 3 && g.oc == 16) reluFilterGradRows3x3x16(g, x, dy, y, r0, r1, acc);
                       else reluFilterGradRows(g, x, dy, y, r0, r1, acc);
                     });
  for (int64_t k = 0; k < taps * g.oc; k++) dw[k] = static_cast<float>(totals[k]);
  for (int64_t k = 0; k < g.oc; k++) sums[k] = static_cast<float>(totals[taps * g.oc + k]);
  return info.Env().Undefined();
}

// BatchNormGradSums over rows [r0, r1) with W channels fixed (registers, as rowsWithChannelSums); W = 0: any width.
template <int W, typename Rows>
void batchNormGradSums(Rows& dy, const float* x, const float* mean, int64_t c, int64_t r0, int64_t r1, double* out) {
  constexpr int kRegisters = W > 0 ? 2 * W : 1;
  double acc[kRegisters] = {};
  double* s1 = W > 0 ? acc : out;
  const int64_t width = W > 0 ? W : c;
  double* s2 = s1 + width;
  dy.forSegments(r0, r1, [&](int64_t q0, int64_t q1) {
    for (int64_t r = q0; r < q1; r++) {
      const float* dr = dy.row(r, width);
      const float* xr = x + r * width;
#pragma omp simd
      for (int64_t k = 0; k < width; k++) {
        s1[k] += dr[k];
        s2[k] += double(dr[k]) * double(xr[k] - mean[k]);
      }
    }
  });
  if (W > 0)
    for (int k = 0; k < 2 * W; k++) out[k] += acc[k];
}

// The two per-channel sums batch-norm's gradient needs, in one pass over channels-last dy and x:
// sums[c] = sum dy[., c], sums[C + c] = sum dy[., c] * (x[., c] - mean[c]). tfjs builds them from
// five activation-sized tensors (x - mean, dy * scale, their products, a tiled rsqrt) and four
// reductions; everything else in that gradient is per channel. Accumulates in double, like Sum.
// With codes and the pooling's parameters, dy is a paired 2x2 / 2 max pooling's (PooledDyRows).
Napi::Value BatchNormGradSums(const Napi::CallbackInfo& info) {
  // (dy, x, mean, sums[2C][, codes, poolParams])
  const float* x = f32(info[1]);
  const float* mean = f32(info[2]);
  float* sums = f32(info[3]);
  const int64_t c = info[2].As<Napi::Float32Array>().ElementLength();
  const int64_t n = info[1].As<Napi::Float32Array>().ElementLength();
  withDyRows(info, 4, n, c, "batchNormGradSums", [&](auto makeRows) {
    columnSumsByThread(n / c, 2 * c, n > kParallelMin, 1.0, sums, [&](int64_t r0, int64_t r1, double* s1) {
      auto dy = makeRows();
      withChannelWidth(c, [&](auto w) { batchNormGradSums<decltype(w)::value>(dy, x, mean, c, r0, r1, s1); });
    });
  });
  return info.Env().Undefined();
}

// BatchNormMoments' sums for rows [r0, r1) with W channels fixed, so the accumulators stay in registers (as
// rowsWithChannelSums; W = 0: c wide): out[k] += x - x[0, k], out[c + k] += its square, in double.
template <int W>
void shiftedSquareSums(const float* x, int64_t c, int64_t r0, int64_t r1, double* out) {
  constexpr int kRegisters = W > 0 ? W : 1;
  double acc1[kRegisters] = {}, acc2[kRegisters] = {};
  const int64_t width = W > 0 ? W : c;
  double* s1 = W > 0 ? acc1 : out;
  double* s2 = W > 0 ? acc2 : out + c;
  for (int64_t r = r0; r < r1; r++) {
    const float* row = x + r * width;
#pragma omp simd
    for (int64_t k = 0; k < width; k++) {
      const double d = double(row[k]) - double(x[k]);
      s1[k] += d;
      s2[k] += d * d;
    }
  }
  if (W > 0)
    for (int k = 0; k < W; k++) {
      out[k] += acc1[k];
      out[W + k] += acc2[k];
    }
}

// Training-mode batch-norm's statistics in one pass over channels-last x: mean[c] and the biased variance[c], as
// tfjs's moments() gives them from three passes (a mean, a squared difference written out, a second mean). The
// sums are taken around each channel's first value (x - x[0, c]) and accumulated in double, so a large mean does
// not cancel the variance away.
Napi::Value BatchNormMoments(const Napi::CallbackInfo& info) {
  // (x, moments[2C]: mean | variance)
  const float* x = f32(info[0]);
  float* moments = f32(info[1]);
  const int64_t c = info[1].As<Napi::Float32Array>().ElementLength() / 2;
  const int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  const int64_t rows = n / c;
  std::vector<double> sums(static_cast<size_t>(2 * c));
  columnSumsByThread(rows, 2 * c, n > kParallelMin, 1.0, sums.data(), [&](int64_t r0, int64_t r1, double* s1) {
    withChannelWidth(c, [&](auto w) { shiftedSquareSums<decltype(w)::value>(x, c, r0, r1, s1); });
  });
  for (int64_t k = 0; k < c; k++) {
    const double shiftedMean = sums[k] / rows;
    moments[k] = static_cast<float>(double(x[k]) + shiftedMean);
    moments[c + k] = static_cast<float>(std::max(0.0, sums[c + k] / rows - shiftedMean * shiftedMean));
  }
  return info.Env().Undefined();
}

// Per-image standardization (the model's input layer, src/model/normalization.ts) in two passes over each image
// instead of tfjs's six ops (a mean, a squared difference, a second mean, a subtraction, a division and the
// floor): each image to zero mean and unit variance, the standard deviation floored at 1 / sqrt(pixels) as
// TensorFlow's per_image_standardization does. The sums are taken around the image's first value, in double; the
// output is (x - mean) / std in float, as tfjs computes it.
Napi::Value StandardizeImages(const Napi::CallbackInfo& info) {
  // (x, y, images)
  const float* x = f32(info[0]);
  float* y = f32(info[1]);
  const int64_t images = info[2].As<Napi::Number>().Int64Value();
  const int64_t n = info[0].As<Napi::Float32Array>().ElementLength();
  if (images <= 0 || n % images != 0) throw std::runtime_error("standardizeImages: the images do not divide the input");
  const int64_t pixels = n / images;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < images; i++) {
    const float* xi = x + i * pixels;
    const double first = xi[0];
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t k = 0; k < pixels; k++) {
      const double d = double(xi[k]) - first;
      s1 += d;
      s2 += d * d;
    }
    const double shiftedMean = s1 / pixels;
    const double variance = std::max(0.0, s2 / pixels - shiftedMean * shiftedMean);
    const float mean = static_cast<float>(first + shiftedMean);
    const float std = std::max(static_cast<float>(std::sqrt(variance)), static_cast<float>(1.0 / std::sqrt(double(pixels))));
    float* yi = y + i * pixels;
#pragma omp simd
    for (int64_t k = 0; k < pixels; k++) yi[k] = (xi[k] - mean) / std;
  }
  return info.Env().Undefined();
}

// Training-mode batch-norm's input gradient in one pass over channels-last dy and x, from per-channel
// coefficients the caller derives from BatchNormGradSums: dx = a[c] * dy + b[c] * (x - mean[c]) + k[c].
// With the batch statistics' own gradients folded in (a = s r, b = -s r^3 S2 / n, k = -s r S1 / n), this
// replaces the chain tfjs differentiates through moments(): two tiled means, squaredDifference's gradient
// and the sums of the three paths back into x.
Napi::Value BatchNormTrainGrad(const Napi::CallbackInfo& info) {
  // (dy, x, mean, coef[3C] = a | b | k, dx[, sums[C] or undefined[, codes, poolParams]]); with codes, as in
  // BatchNormGradSums.
  const float* x = f32(info[1]);
  const float* mean = f32(info[2]);
  const float* coef = f32(info[3]);
  float* dx = f32(info[4]);
  float* sums = info.Length() > 5 && !info[5].IsUndefined() ? f32(info[5]) : nullptr;
  const int64_t c = info[2].As<Napi::Float32Array>().ElementLength();
  const int64_t n = info[4].As<Napi::Float32Array>().ElementLength();
  const float* a = coef;
  const float* b = coef + c;
  const float* k = coef + 2 * c;
  const int64_t rows = n / c;
  withDyRows(info, 6, n, c, "batchNormTrainGrad", [&](auto makeRows) {
    if (!sums) {
#pragma omp parallel if (n > kParallelMin)
      {
        auto dy = makeRows();
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        dy.forSegments(rows * t / nt, rows * (t + 1) / nt, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; r++) {
            const float* dr = dy.row(r, c);
            const float* xr = x + r * c;
            float* out = dx + r * c;
#pragma omp simd
            for (int64_t j = 0; j < c; j++) out[j] = a[j] * dr[j] + b[j] * (xr[j] - mean[j]) + k[j];
          }
        });
      }
      return;
    }
    // With sums: x is a ReLU's output, and dx comes out multiplied by ReLU's mask step(x) (ReluGrad's values), with
    // its per-channel sums, the ReLU layer's bias gradient, so that layer needs no mask pass of its own.
    columnSumsByThread(rows, c, n > kParallelMin, 1.0, sums, [&](int64_t r0, int64_t r1, double* acc) {
      auto dy = makeRows();
      withChannelWidth(c, [&](auto w) {
        rowsWithChannelSums<decltype(w)::value>(
            c, r0, r1, acc,
            [&](int64_t i, int64_t j) { return dx[i] = (a[j] * dy.at(i) + b[j] * (x[i] - mean[j]) + k[j]) * stepOf(x[i]); },
            dy);
      });
    });
  });
  return info.Env().Undefined();
}

// One Adam step for one variable, in tfjs's order of float32 operations (AdamOptimizer's
// applyGradients does them as 14 tensor ops, each a full pass over the variable):
// m' = m*b1 + g*(1-b1); v' = v*b2 + g*g*(1-b2); w' = (m'/c1) / (sqrt(v'/c2) + eps) * -lr + w.
Napi::Value Adam(const Napi::CallbackInfo& info) {
  // (w, g, m, v, p:Float64Array[b1, 1-b1, b2, 1-b2, c1, c2, eps, -lr], wOut, mOut, vOut)
  const float* w = f32(info[0]);
  const float* g = f32(info[1]);
  const float* m = f32(info[2]);
  const float* v = f32(info[3]);
  auto pa = info[4].As<Napi::Float64Array>();
  if (pa.ElementLength() != 8) throw std::runtime_error("adam: expected 8 parameters");
  float p[8];
  for (int i = 0; i < 8; i++) p[i] = static_cast<float>(pa[i]);
  float* wOut = f32(info[5]);
  float* mOut = f32(info[6]);
  float* vOut = f32(info[7]);
  const int64_t n = info[5].As<Napi::Float32Array>().ElementLength();
  const float b1 = p[0], omb1 = p[1], b2 = p[2], omb2 = p[3], c1 = p[4], c2 = p[5], eps = p[6], negLr = p[7];
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    float nm = m[i] * b1 + g[i] * omb1;
    float nv = v[i] * b2 + (g[i] * g[i]) * omb2;
    mOut[i] = nm;
    vOut[i] = nv;
    wOut[i] = (nm / c1) / (std::sqrt(nv / c2) + eps) * negLr + w[i];
  }
  return info.Env().Undefined();
}

// Sum over leading rows: x is [rows, inner], y[j] = sum_r x[r, j] (SumMode::kLeadingRows),
// or over trailing elements: x is [outer, inner], y[o] = sum_j x[o, j] (SumMode::kTrailing).
// Accumulates in double, like tfjs's JS kernels, so long reductions do not drift.
Napi::Value Sum(const Napi::CallbackInfo& info) {
  // (x, y, mode, outer, inner, scale)
  const float* x = f32(info[0]);
  float* y = f32(info[1]);
  int mode = info[2].As<Napi::Number>().Int32Value();
  int64_t outer = info[3].As<Napi::Number>().Int64Value();
  int64_t inner = info[4].As<Napi::Number>().Int64Value();
  double scale = info[5].As<Napi::Number>().DoubleValue();
  if (static_cast<SumMode>(mode) == SumMode::kTrailing) {
#pragma omp parallel for schedule(static) if (outer * inner > kParallelMin)
    for (int64_t o = 0; o < outer; o++) {
      const float* row = x + o * inner;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < inner; j++) s += row[j];
      y[o] = static_cast<float>(s * scale);
    }
    return info.Env().Undefined();
  }
  columnSumsByThread(outer, inner, outer * inner > kParallelMin, scale, y, [&](int64_t r0, int64_t r1, double* acc) {
    withChannelWidth(inner, [&](auto w) { rowsWithChannelSums<decltype(w)::value>(inner, r0, r1, acc, [&](int64_t i, int64_t) { return x[i]; }); });
  });
  return info.Env().Undefined();
}

// Tile: y[i0..ik] = x[i0 % s0, ..., ik % sk], copying whole input rows along the last axis.
Napi::Value Tile(const Napi::CallbackInfo& info) {
  // (x, y, inShape:Int32Array, outShape:Int32Array)
  const float* x = f32(info[0]);
  float* y = f32(info[1]);
  auto in = ints(info[2]);
  auto out = ints(info[3]);
  const size_t rank = in.size();
  const int64_t inLast = in[rank - 1], outLast = out[rank - 1];
  int64_t outRows = 1;
  bool oneInputRow = true;  // e.g. [1,1,1,C] tiled to [N,H,W,C]: every output row is the same
  for (size_t d = 0; d + 1 < rank; d++) {
    outRows *= out[d];
    oneInputRow = oneInputRow && in[d] == 1;
  }
  if (oneInputRow && inLast == outLast) {
#pragma omp parallel for schedule(static) if (outRows * outLast > kParallelMin)
    for (int64_t r = 0; r < outRows; r++) std::memcpy(y + r * outLast, x, sizeof(float) * outLast);
    return info.Env().Undefined();
  }
#pragma omp parallel for schedule(static) if (outRows * outLast > kParallelMin)
  for (int64_t r = 0; r < outRows; r++) {
    // Decompose the output row index and map it to an input row.
    int64_t rem = r, inRow = 0, mult = 1;
    for (int64_t d = static_cast<int64_t>(rank) - 2; d >= 0; d--) {
      int64_t idx = rem % out[d];
      rem /= out[d];
      inRow += (idx % in[d]) * mult;
      mult *= in[d];
    }
    const float* src = x + inRow * inLast;
    float* dst = y + r * outLast;
    for (int64_t j = 0; j < outLast; j += inLast) {
      int64_t len = std::min(inLast, outLast - j);
      for (int64_t k = 0; k < len; k++) dst[j + k] = src[k];
    }
  }
  return info.Env().Undefined();
}

// Batch-norm with per-channel statistics over a channels-last tensor:
// y = (x - mean[c]) * scale[c] / sqrt(var[c] + eps) + offset[c].
Napi::Value BatchNorm(const Napi::CallbackInfo& info) {
  // (x, mean, variance, scale, offset, eps, y); the four vectors have C elements.
  const BatchNormArgs bn = BatchNormArgs::from(info);
  const float *x = bn.x, *mean = bn.mean, *offset = bn.offset, *a = bn.multiplier.data();
  float* y = f32(info[6]);
  const int64_t c = static_cast<int64_t>(bn.multiplier.size());
  const int64_t n = info[6].As<Napi::Float32Array>().ElementLength();
  const int64_t rows = n / c;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
#pragma omp simd
    for (int64_t k = 0; k < c; k++) yr[k] = (xr[k] - mean[k]) * a[k] + offset[k];
  }
  return info.Env().Undefined();
}

}  // namespace

BatchNormArgs BatchNormArgs::from(const Napi::CallbackInfo& info) {
  const float* var = f32(info[2]);
  const float* scale = f32(info[3]);
  const double eps = info[5].As<Napi::Number>().DoubleValue();
  const int64_t c = info[1].As<Napi::Float32Array>().ElementLength();
  BatchNormArgs args{f32(info[0]), f32(info[1]), f32(info[4]), std::vector<float>(c)};
  for (int64_t k = 0; k < c; k++) args.multiplier[k] = static_cast<float>(scale[k] / std::sqrt(double(var[k]) + eps));
  return args;
}

void registerElementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("clip", Napi::Function::New(env, Clip));
  exports.Set("sum", Napi::Function::New(env, Sum));
  exports.Set("reluGrad", Napi::Function::New(env, ReluGrad));
  exports.Set("reluGradChannelSums", Napi::Function::New(env, ReluGradChannelSums));
  exports.Set("reluFilterGradOneChannel", Napi::Function::New(env, ReluFilterGradOneChannel));
  exports.Set("adam", Napi::Function::New(env, Adam));
  exports.Set("batchNormGradSums", Napi::Function::New(env, BatchNormGradSums));
  exports.Set("batchNormMoments", Napi::Function::New(env, BatchNormMoments));
  exports.Set("standardizeImages", Napi::Function::New(env, StandardizeImages));
  exports.Set("batchNormTrainGrad", Napi::Function::New(env, BatchNormTrainGrad));
  exports.Set("tile", Napi::Function::New(env, Tile));
  exports.Set("batchNorm", Napi::Function::New(env, BatchNorm));
}

}  // namespace pn
