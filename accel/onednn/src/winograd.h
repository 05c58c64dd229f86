// Our own Winograd convolutions, F(2x2, 3x3) and F(4x4, 3x3), for 16 -> 16 channel 3x3 convolutions with stride 1
// (winograd.cc): the forward pass and both gradients, on NHWC activations and HWIO filters as tfjs keeps them.
#pragma once
#include "common.h"
#include "pool.h"

namespace pn {

// The output tile's side: F(2x2, 3x3) or F(4x4, 3x3).
enum class WinogradTile : int { k2x2 = 2, k4x4 = 4 };

// Whether the convolution is one these run: 16 -> 16 channels, 3x3, stride 1, no dilation, padding of 0 to 2.
bool ownWinogradFits(const ConvGeom& g);
void ownWinogradForward(WinogradTile tile, const ConvGeom& g, const float* x, const float* w, const float* bias,
                        float* y, bool relu);
// The forward pass followed by a 2x2 max pooling with stride 2 ('valid'): `pooled` is n x oh/2 x ow/2 x 16 (floor),
// and the convolution's own output is never written out; where `codes` is not null, the pooling's codes (pool.h) go
// there, laid out as `pooled`.
void ownWinogradForwardMaxPool(WinogradTile tile, const ConvGeom& g, const float* x, const float* w,
                               const float* bias, float* pooled, bool relu, Code* codes = nullptr);
void ownWinogradBackwardData(WinogradTile tile, const ConvGeom& g, const float* dy, const float* w, float* dx);
// The input gradient when dy is a 2x2 / 2 max pooling's gradient over a ReLU's output (the fused training pair,
// conv.cc): each dy row expanded from the pooled one as MaxPoolGradRelu would write it, and used from cache.
void ownWinogradBackwardDataPooled(WinogradTile tile, const ConvGeom& g, const PooledGrad& dy, const float* w,
                                   float* dx);
// The filter gradient from dy, or where dyPooled is not null from rows expanded from it (dy then unused).
void ownWinogradBackwardFilter(WinogradTile tile, const ConvGeom& g, const float* x, const float* dy,
                               const PooledGrad* dyPooled, float* dw);

}  // namespace pn
