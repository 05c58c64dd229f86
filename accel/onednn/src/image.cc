// tf.image.transform's kernel for the augmentation's warps (bilinear interpolation, 'nearest' fill, affine
// transforms), over NHWC float images. The `native` backend otherwise inherits tfjs's CPU Transform kernel, which
// warps only the first image of a batch, so augment.ts did the warp in JavaScript: 11 ms of every 32x150x150
// training batch, on one thread. The arithmetic is warpBilinearNearest's (src/augment.ts) operation for operation:
// sampling coordinates in float, the interpolation in double, so the two give the same bits (tests check it), and
// this function is compiled without FMA contraction, which would round differently.
#include "common.h"
#include <algorithm>

namespace pn {
namespace {

__attribute__((optimize("fp-contract=off"))) void warpRows(const float* src, float* out, const float* m, int64_t b,
                                                           int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                                           int64_t y) {
  const float maxX = float(w - 1), maxY = float(h - 1);
  const int64_t rowStride = w * c;
  const float* image = src + b * h * rowStride;
  float* o = out + ((b * oh + y) * ow) * c;
  const float m1y = m[1] * float(y), m4y = m[4] * float(y);
  for (int64_t x = 0; x < ow; x++) {
    // ((m0*x + m1*y) + m2) in float32, as the wasm and TF kernels compute it.
    float sx = (m[0] * float(x) + m1y) + m[2];
    float sy = (m[3] * float(x) + m4y) + m[5];
    sx = sx < 0.f ? 0.f : sx > maxX ? maxX : sx;
    sy = sy < 0.f ? 0.f : sy > maxY ? maxY : sy;
    const int64_t x0 = int64_t(sx), y0 = int64_t(sy);  // floor: both are >= 0 here
    // At the last row/column the second neighbour has weight 0; the first is read again instead of past the edge.
    const int64_t dx = x0 < w - 1 ? c : 0, dy = y0 < h - 1 ? rowStride : 0;
    const double fx = double(sx) - double(x0), fy = double(sy) - double(y0);
    const float* p = image + y0 * rowStride + x0 * c;
    for (int64_t ch = 0; ch < c; ch++) {
      const double v00 = p[ch], v01 = p[ch + dx], v10 = p[ch + dy], v11 = p[ch + dy + dx];
      const double top = v00 + (v01 - v00) * fx;
      *o++ = float(top + (v10 + (v11 - v10) * fx - top) * fy);
    }
  }
}

Napi::Value WarpBilinearNearest(const Napi::CallbackInfo& info) {
  // (image, transforms[8 per image, or 8 for all], out, params = N H W C OH OW)
  const float* src = f32(info[0]);
  const float* transforms = f32(info[1]);
  const int64_t perImage = info[1].As<Napi::Float32Array>().ElementLength() == 8 ? 0 : 8;
  float* out = f32(info[2]);
  const std::vector<int64_t> p = ints(info[3]);
  if (p.size() != 6) throw std::runtime_error("warpBilinearNearest: expected 6 parameters");
  const int64_t n = p[0], h = p[1], w = p[2], c = p[3], oh = p[4], ow = p[5];
#pragma omp parallel for collapse(2) schedule(static) if (n * oh * ow * c > (1 << 16))
  for (int64_t b = 0; b < n; b++)
    for (int64_t y = 0; y < oh; y++) warpRows(src, out, transforms + b * perImage, b, h, w, c, oh, ow, y);
  return info.Env().Undefined();
}

}  // namespace

void registerImage(Napi::Env env, Napi::Object exports) {
  exports.Set("warpBilinearNearest", Napi::Function::New(env, WarpBilinearNearest));
}

}  // namespace pn
