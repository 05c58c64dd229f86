// Winograd F(2x2, 3x3) for 16 -> 16 channel 3x3 convolutions with stride 1 (winograd.cc): the forward pass and
// both gradients, on NHWC activations and HWIO filters as tfjs keeps them.
#pragma once
#include "common.h"

namespace pn {

// Whether the convolution is one these run: 16 -> 16 channels, 3x3, stride 1, no dilation, padding of 0 to 2.
bool winograd2x2Fits(const ConvGeom& g);
void winograd2x2Forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y, bool relu);
void winograd2x2BackwardData(const ConvGeom& g, const float* dy, const float* w, float* dx);
void winograd2x2BackwardFilter(const ConvGeom& g, const float* x, const float* dy, float* dw);

}  // namespace pn
