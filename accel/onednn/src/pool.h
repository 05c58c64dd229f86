// Max pooling's geometry and forward pass (pool.cc), for the kernels that pool their own output (conv.cc).
#pragma once
#include "common.h"
#include <limits>

namespace pn {

// NHWC input n x h x w x c, output oh x ow, window kh x kw, strides, dilations, padding at the top and left.
struct PoolGeom {
  int64_t n, h, w, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
  static PoolGeom from(const std::vector<int64_t>& p);
};

// Whether every input pixel lies in at most one window: windows as wide as their stride, no dilation or padding.
bool nonOverlapping(const PoolGeom& g);

// y = max over each window of x, tfjs's MaxPool (the first maximum wins; NaN never does).
void maxPoolForward(const PoolGeom& g, const float* x, float* y);

// Training's fused layer + 2x2 / 2 max pooling pairs (conv.cc: conv + bias + ReLU; pool.cc: batch-norm) keep,
// instead of the layer's output (four times the pooling's), one 16-bit code per pooled value and channel: which tap
// of the window takes the pooling's gradient (bits 0-3, one bit per tap in row-major order, none where no tap is
// above -inf), whether that winner is positive (kCodePositive: ReLU's mask there) and which taps are NaN (bit
// kCodeNanShift + tap). That is all MaxPoolGradRelu reads from the ReLU's output, so the gradient rows
// expandPooledGradRow makes from the pooling's dy and the codes are its dx, to the bit. Without a ReLU (`masksRelu`
// false: the batch-norm), every winner counts as positive and no tap as NaN: MaxPoolGrad's dx.
typedef uint16_t Code;
constexpr int kCodePositive = 16, kCodeNanShift = 8;
typedef int32_t IntsV __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef Code CodesV __attribute__((vector_size(kLanes * sizeof(Code))));

// The maximum of a 2x2 window's taps (row-major) by MaxPool's rule (a tap is taken only when greater, so the first
// maximum wins and NaN never does), with its codes written to code[0..kLanes-1].
inline FloatsV maxOfFourWithCodes(const FloatsV* taps, Code* code, bool masksRelu = true) {
  const FloatsV ninf = FloatsV{} - std::numeric_limits<float>::infinity(), zero = {};
  FloatsV best = ninf;
  IntsV winner = {}, bits = {};
  for (int k = 0; k < 4; k++) {
    const IntsV greater = taps[k] > best;
    best = greater ? taps[k] : best;
    winner = greater ? IntsV{} + (1 << k) : winner;
    bits |= (taps[k] != taps[k]) & (1 << (kCodeNanShift + k));
  }
  bits = masksRelu ? bits | winner | ((best > zero) & kCodePositive) : winner | kCodePositive;
  const CodesV packed = __builtin_convertvector(bits, CodesV);
  std::memcpy(code, &packed, sizeof packed);
  return best;
}

// The gradient of a 2x2 / 2 max pooling of a ReLU's output, as its dy (n x ph x pw x c) and the codes above.
struct PooledGrad {
  const float* dy;
  const Code* codes;
  int64_t ph, pw, c;
  // A kernel's (dy, codes) arguments for pooling g, which must be a pooling codedPoolingFits takes.
  static PooledGrad from(const PoolGeom& g, const Napi::Value& dy, const Napi::Value& codes, const char* kernel);
};

// Row r (width w) of image b of MaxPoolGradRelu's dx: each tap's dy * step(ReLU output) as windowGrads computes it
// (pool.cc), zeros where no window reaches.
void expandPooledGradRow(const PooledGrad& p, int64_t b, int64_t r, int64_t w, float* out);
// All n x h rows of it, into dx.
void expandPooledGrad(const PooledGrad& p, int64_t n, int64_t h, int64_t w, float* dx);

// Whether g is a 2x2 / 2 pooling over channels maxOfFourWithCodes takes (a multiple of kLanes); then
// maxPoolForwardWithCodes is its forward pass with the codes.
bool codedPoolingFits(const PoolGeom& g);
void maxPoolForwardWithCodes(const PoolGeom& g, const float* x, float* y, Code* codes);

}  // namespace pn
