// Element-wise kernels that dominate a training step once convolutions are fast.
#include "common.h"

namespace pn {
namespace {

Napi::Value Relu(const Napi::CallbackInfo& info) {
  const float* x = f32(info[0]);
  float* y = f32(info[1]);
  int64_t n = info[1].As<Napi::Float32Array>().ElementLength();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
  return info.Env().Undefined();
}

}  // namespace

void registerElementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("relu", Napi::Function::New(env, Relu));
}

}  // namespace pn
