// Max pooling forward and gradient over NHWC tensors. Written directly (not with
// oneDNN) so the gradient needs only x and the forward output, like tfjs's
// MaxPoolGrad (oneDNN's wants a workspace kept from the forward), with the same
// tie rule: the first maximum in row-major window order wins.
#include "pool.h"
#include <cmath>
#include <algorithm>
#include <limits>
#include <vector>

namespace pn {

PoolGeom PoolGeom::from(const std::vector<int64_t>& p) {
  if (p.size() != 14) throw std::runtime_error("pool parameters: expected 14 integers");
  return PoolGeom{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13]};
}

namespace {

// Calls visit(offset of the input pixel's first channel) for each tap of output pixel (r, col) of image b that lies
// inside the image, in row-major window order (the order the tie rule depends on).
template <typename Visit>
inline void forEachTap(const PoolGeom& g, int64_t b, int64_t r, int64_t col, Visit visit) {
  for (int64_t i = 0; i < g.kh; i++) {
    int64_t xr = r * g.sh - g.pt + i * g.dh;
    if (xr < 0 || xr >= g.h) continue;
    for (int64_t j = 0; j < g.kw; j++) {
      int64_t xc = col * g.sw - g.pl + j * g.dw;
      if (xc < 0 || xc >= g.w) continue;
      visit(((b * g.h + xr) * g.w + xc) * g.c);
    }
  }
}

// y = max over each window of value(x at the tap, channel): MaxPool's loop, with the value each tap contributes
// computed on the way (the identity for MaxPool, a batch-norm for BatchNormMaxPool).
template <typename Value>
void maxOfWindows(const PoolGeom& g, const float* x, float* y, Value value) {
  const float ninf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.h * g.w * g.c > (1 << 17))
  for (int64_t b = 0; b < g.n; b++) {
    for (int64_t r = 0; r < g.oh; r++) {
      for (int64_t col = 0; col < g.ow; col++) {
        float* out = y + ((b * g.oh + r) * g.ow + col) * g.c;
        for (int64_t ch = 0; ch < g.c; ch++) out[ch] = ninf;
        forEachTap(g, b, r, col, [&](int64_t base) {
          const float* in = x + base;
#pragma omp simd
          for (int64_t ch = 0; ch < g.c; ch++) {
            const float v = value(in[ch], ch);
            out[ch] = v > out[ch] ? v : out[ch];
          }
        });
      }
    }
  }
}

// y = the 2x2 / 2 max pooling of value(x at each tap, its first channel), with its codes (maxOfFourWithCodes);
// channels a multiple of kLanes.
template <typename Value>
void maxOfWindowsWithCodes(const PoolGeom& g, const float* x, float* y, Code* codes, bool masksRelu, Value value) {
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.h * g.w * g.c > (1 << 17))
  for (int64_t b = 0; b < g.n; b++)
    for (int64_t r = 0; r < g.oh; r++)
      for (int64_t col = 0; col < g.ow; col++)
        for (int64_t ch = 0; ch < g.c; ch += kLanes) {
          FloatsV taps[4];
          for (int k = 0; k < 4; k++)
            taps[k] = value(loadV(x + ((b * g.h + 2 * r + k / 2) * g.w + 2 * col + k % 2) * g.c + ch), ch);
          const int64_t at = ((b * g.oh + r) * g.ow + col) * g.c + ch;
          storeV(y + at, maxOfFourWithCodes(taps, codes + at, masksRelu));
        }
}

Napi::Value MaxPool(const Napi::CallbackInfo& info) {
  // (x, y, params)
  maxPoolForward(PoolGeom::from(ints(info[2])), f32(info[0]), f32(info[1]));
  return info.Env().Undefined();
}

// Inference-mode batch-norm followed by max pooling, in one pass: y = maxPool((x - mean) * a + offset), a = scale /
// sqrt(variance + eps), each tap's value computed as BatchNorm (elementwise.cc) computes it, so the result is the two
// kernels' (both tfjs's order of operations). The batch-norm's output, as large as x, is never written out.
// With `codes`, for training (BATCH_NORM_MAX_POOL_TRAIN, src/accel/fused/batchnorm.ts): a 2x2 / 2 pooling, and the
// codes (pool.h) from which its gradient is expanded (elementwise.cc's PooledDyRows) without the batch-norm's output.
Napi::Value BatchNormMaxPool(const Napi::CallbackInfo& info) {
  // (x, mean, variance, scale, offset, eps, y, poolParams, codes?); the four vectors have C elements.
  const BatchNormArgs bn = BatchNormArgs::from(info);
  const float *mean = bn.mean, *offset = bn.offset, *a = bn.multiplier.data();
  const PoolGeom g = PoolGeom::from(ints(info[7]));
  if (static_cast<int64_t>(bn.multiplier.size()) != g.c) throw std::runtime_error("batchNormMaxPool: expected C statistics");
  Code* codes = info.Length() > 8 && !info[8].IsUndefined() ? codesOf(info[8]) : nullptr;
  if (!codes) {
    maxOfWindows(g, bn.x, f32(info[6]), [&](float v, int64_t ch) { return (v - mean[ch]) * a[ch] + offset[ch]; });
    return info.Env().Undefined();
  }
  if (!codedPoolingFits(g)) throw std::runtime_error("batchNormMaxPool: codes only for a 2x2 / 2 pooling");
  maxOfWindowsWithCodes(g, bn.x, f32(info[6]), codes, false, [&](FloatsV v, int64_t ch) {
    return (v - loadV(mean + ch)) * loadV(a + ch) + loadV(offset + ch);
  });
  return info.Env().Undefined();
}

// Non-overlapping windows without padding (the usual 2x2/2 pooling): every input belongs to at most one window, so
// each window writes its own part of dx directly. The forward output already holds each window's maximum, so a tap
// only has to compare equal to it; `pending` hands dy to the first tap that does (the tie rule) and then drops to 0.
// Branch-free, so the channel loop vectorises; the argmax search it replaces did not (a tenth of a training step on
// a Zen 1 CPU; on Zen 4 this took the kernel from 13.6-14.2 to 11.1-11.2 ms a step).
// kMasked: the pooled input is a ReLU's output x, and dx comes out already multiplied by ReLU's mask step(x) (as
// ReluGrad computes it, NaN included) with its per-channel sums added into sums[c] (columnSumsByThread's rows are
// the window rows), so the layer before needs no mask pass of its own.
template <bool kMasked>
void windowGrads(const PoolGeom& g, const float* dy, const float* x, const float* y, float* dx, float* sums) {
  const float ninf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.h * g.w * g.c > (1 << 17))
  for (int64_t b = 0; b < g.n; b++) {
    for (int64_t r = 0; r < g.h; r++) {
      float* row = dx + (b * g.h + r) * g.w * g.c;
      if (r >= g.oh * g.sh) {
        std::fill(row, row + g.w * g.c, 0.f);
        continue;
      }
      std::fill(row + g.ow * g.sw * g.c, row + g.w * g.c, 0.f);  // columns no window covers
    }
  }
  auto windowRows = [&](int64_t r0, int64_t r1, double* acc) {
    std::vector<float> pending(g.c), rowSums(g.c);
    float* p = pending.data();
    float* s = rowSums.data();
    for (int64_t wr = r0; wr < r1; wr++) {
      const int64_t b = wr / g.oh, r = wr % g.oh;
      if constexpr (kMasked) std::fill(rowSums.begin(), rowSums.end(), 0.f);
      for (int64_t col = 0; col < g.ow; col++) {
        const int64_t out = ((b * g.oh + r) * g.ow + col) * g.c;
        const float* m = y + out;
        const float* g0 = dy + out;
        // A window of NaN or -inf has no tap above -inf: like tfjs's strict comparison, no tap takes the gradient.
#pragma omp simd
        for (int64_t ch = 0; ch < g.c; ch++) p[ch] = m[ch] > ninf ? g0[ch] : 0.f;
        for (int64_t i = 0; i < g.kh; i++) {
          for (int64_t j = 0; j < g.kw; j++) {
            const int64_t base = ((b * g.h + r * g.sh + i) * g.w + col * g.sw + j) * g.c;
            const float* in = x + base;
            float* d = dx + base;
#pragma omp simd
            for (int64_t ch = 0; ch < g.c; ch++) {
              const float v = in[ch];
              const bool hit = v == m[ch];
              const float taken = hit ? p[ch] : 0.f;
              p[ch] = hit ? 0.f : p[ch];
              if constexpr (kMasked) {
                const float masked = taken * stepOf(v);  // stepOf's selects keep this loop vectorised for AVX2
                d[ch] = masked;
                s[ch] += masked;
              } else {
                d[ch] = taken;
              }
            }
          }
        }
      }
      if constexpr (kMasked)
        for (int64_t ch = 0; ch < g.c; ch++) acc[ch] += s[ch];
    }
  };
  const int64_t windowRowCount = g.n * g.oh;
  if constexpr (kMasked) {
    columnSumsByThread(windowRowCount, g.c, g.n * g.h * g.w * g.c > (1 << 17), 1.0, sums, windowRows);
  } else {
#pragma omp parallel if (g.n * g.h * g.w * g.c > (1 << 17))
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      windowRows(windowRowCount * t / nt, windowRowCount * (t + 1) / nt, nullptr);
    }
  }
}

Napi::Value MaxPoolGrad(const Napi::CallbackInfo& info) {
  // (dy, x, y, dx, params); y is the forward output; dx is zeroed here.
  const float* dy = f32(info[0]);
  const float* x = f32(info[1]);
  const float* y = f32(info[2]);
  float* dx = f32(info[3]);
  PoolGeom g = PoolGeom::from(ints(info[4]));
  const float ninf = -std::numeric_limits<float>::infinity();
  if (nonOverlapping(g)) {
    windowGrads<false>(g, dy, x, y, dx, nullptr);
    return info.Env().Undefined();
  }
  // Parallel over (batch, channel block): windows may overlap, so each thread owns whole channels.
  const int64_t block = 16;
  const int64_t cblocks = (g.c + block - 1) / block;
#pragma omp parallel for collapse(2) schedule(static) if (g.n * g.h * g.w * g.c > (1 << 17))
  for (int64_t b = 0; b < g.n; b++) {
    for (int64_t cb = 0; cb < cblocks; cb++) {
      int64_t c0 = cb * block, c1 = std::min(g.c, c0 + block);
      for (int64_t r = 0; r < g.h; r++)
        for (int64_t col = 0; col < g.w; col++)
          for (int64_t ch = c0; ch < c1; ch++) dx[((b * g.h + r) * g.w + col) * g.c + ch] = 0.f;
      for (int64_t r = 0; r < g.oh; r++) {
        for (int64_t col = 0; col < g.ow; col++) {
          float best[block];
          int64_t where[block];
          for (int64_t k = 0; k < block; k++) { best[k] = ninf; where[k] = -1; }
          forEachTap(g, b, r, col, [&](int64_t base) {
            for (int64_t ch = c0; ch < c1; ch++) {
              float v = x[base + ch];
              if (v > best[ch - c0]) {  // strict: the first maximum wins, NaN never does
                best[ch - c0] = v;
                where[ch - c0] = base + ch;
              }
            }
          });
          const float* g0 = dy + ((b * g.oh + r) * g.ow + col) * g.c;
          for (int64_t ch = c0; ch < c1; ch++)
            if (where[ch - c0] >= 0) dx[where[ch - c0]] += g0[ch];
        }
      }
    }
  }
  return info.Env().Undefined();
}

// MaxPoolGrad of a ReLU's output, with ReLU's gradient applied (windowGrads<true>): dx = MaxPoolGrad(dy) * step(x)
// and sums[c] = sum dx[., c], the ReLU layer's bias gradient. Non-overlapping windows only.
Napi::Value MaxPoolGradRelu(const Napi::CallbackInfo& info) {
  // (dy, x, y, dx, sums[C], params)
  const float* dy = f32(info[0]);
  const float* x = f32(info[1]);
  const float* y = f32(info[2]);
  float* dx = f32(info[3]);
  float* sums = f32(info[4]);
  PoolGeom g = PoolGeom::from(ints(info[5]));
  if (!nonOverlapping(g)) throw std::runtime_error("maxPoolGradRelu: only non-overlapping windows without padding");
  windowGrads<true>(g, dy, x, y, dx, sums);
  return info.Env().Undefined();
}

// kLanes channels of a window's gradient in MaxPoolGradRelu's dx (windowGrads<true>: the window's dy taken by its
// winner, times step of the ReLU output there), from the pooled dy and the window's codes, read once for its taps:
// the winner's dy * step, 0 * step elsewhere (0, or NaN at a NaN tap), as windowGrads computes them.
class WindowGrad {
 public:
  WindowGrad(const float* dy, const Code* codes) {
    CodesV packed;
    std::memcpy(&packed, codes, sizeof packed);
    code_ = __builtin_convertvector(packed, IntsV);
    const FloatsV zero = {};
    winner_ = loadV(dy) * ((code_ & kCodePositive) != IntsV{} ? zero + 1.f : zero);
  }
  FloatsV tap(int k) const {
    const FloatsV zero = {}, nan = zero + std::numeric_limits<float>::quiet_NaN();
    const FloatsV taken = (code_ & (1 << k)) != IntsV{} ? winner_ : zero;
    return (code_ & (1 << (kCodeNanShift + k))) != IntsV{} ? nan : taken;
  }

 private:
  IntsV code_;
  FloatsV winner_;
};

// The sums of MaxPoolGradRelu's dx per channel, from the pooled dy and codes: every tap's value added in windowGrads'
// order (window rows split over the threads alike), so the sums are its, to the bit.
void pooledReluGradSums(const PooledGrad& p, int64_t n, int64_t h, int64_t w, float* sums) {
  auto windowRows = [&](int64_t r0, int64_t r1, double* acc) {
    std::vector<float> rowSums(p.c);
    float* s = rowSums.data();
    for (int64_t wr = r0; wr < r1; wr++) {
      std::fill(rowSums.begin(), rowSums.end(), 0.f);
      for (int64_t col = 0; col < p.pw; col++) {
        const int64_t at = (wr * p.pw + col) * p.c;
        for (int64_t ch = 0; ch < p.c; ch += kLanes) {
          const WindowGrad window(p.dy + at + ch, p.codes + at + ch);
          FloatsV sum = loadV(s + ch);
          for (int k = 0; k < 4; k++) sum += window.tap(k);
          storeV(s + ch, sum);
        }
      }
      for (int64_t ch = 0; ch < p.c; ch++) acc[ch] += s[ch];
    }
  };
  columnSumsByThread(n * p.ph, p.c, n * h * w * p.c > (1 << 17), 1.0, sums, windowRows);
}

// pooledReluGradSums(dy, codes, sums, poolParams): the ReLU layer's bias gradient (MaxPoolGradRelu's sums).
Napi::Value PooledReluGradSums(const Napi::CallbackInfo& info) {
  const PoolGeom g = PoolGeom::from(ints(info[3]));
  pooledReluGradSums(PooledGrad::from(g, info[0], info[1], "pooledReluGradSums"), g.n, g.h, g.w, f32(info[2]));
  return info.Env().Undefined();
}

}  // namespace

bool codedPoolingFits(const PoolGeom& g) { return nonOverlapping(g) && g.kh == 2 && g.kw == 2 && g.c % kLanes == 0; }

PooledGrad PooledGrad::from(const PoolGeom& g, const Napi::Value& dy, const Napi::Value& codes, const char* kernel) {
  if (!codedPoolingFits(g)) throw std::runtime_error(std::string(kernel) + ": only a 2x2 / 2 pooling of 16k channels");
  return PooledGrad{f32(dy), codesOf(codes), g.oh, g.ow, g.c};
}

void maxPoolForwardWithCodes(const PoolGeom& g, const float* x, float* y, Code* codes) {
  maxOfWindowsWithCodes(g, x, y, codes, true, [](FloatsV v, int64_t) { return v; });
}

void expandPooledGradRow(const PooledGrad& p, int64_t b, int64_t r, int64_t w, float* out) {
  if (r >= 2 * p.ph) {
    std::fill(out, out + w * p.c, 0.f);
    return;
  }
  const int64_t covered = 2 * p.pw;
  const int top = static_cast<int>(r % 2) * 2;  // the window's taps on this row: top and top + 1
  for (int64_t pc = 0; pc < p.pw; pc++) {
    const int64_t at = ((b * p.ph + r / 2) * p.pw + pc) * p.c;
    float* left = out + 2 * pc * p.c;
    for (int64_t ch = 0; ch < p.c; ch += kLanes) {
      const WindowGrad window(p.dy + at + ch, p.codes + at + ch);
      storeV(left + ch, window.tap(top));
      storeV(left + p.c + ch, window.tap(top + 1));
    }
  }
  std::fill(out + covered * p.c, out + w * p.c, 0.f);
}

void expandPooledGrad(const PooledGrad& p, int64_t n, int64_t h, int64_t w, float* dx) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n * h; row++) expandPooledGradRow(p, row / h, row % h, w, dx + row * w * p.c);
}

bool nonOverlapping(const PoolGeom& g) {
  return g.kh == g.sh && g.kw == g.sw && g.dh == 1 && g.dw == 1 && g.pt == 0 && g.pl == 0 && g.oh * g.sh <= g.h &&
         g.ow * g.sw <= g.w;
}

void maxPoolForward(const PoolGeom& g, const float* x, float* y) {
  maxOfWindows(g, x, y, [](float v, int64_t) { return v; });
}

void registerPool(Napi::Env env, Napi::Object exports) {
  exports.Set("maxPool", Napi::Function::New(env, MaxPool));
  exports.Set("maxPoolGrad", Napi::Function::New(env, MaxPoolGrad));
  exports.Set("maxPoolGradRelu", Napi::Function::New(env, MaxPoolGradRelu));
  exports.Set("batchNormMaxPool", Napi::Function::New(env, BatchNormMaxPool));
  exports.Set("pooledReluGradSums", Napi::Function::New(env, PooledReluGradSums));
}

}  // namespace pn
