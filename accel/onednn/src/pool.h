// Max pooling's geometry and forward pass (pool.cc), for the kernels that pool their own output (conv.cc).
#pragma once
#include "common.h"

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

}  // namespace pn
