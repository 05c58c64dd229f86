// Shared helpers for the pneumo_native addon: one oneDNN CPU engine/stream and
// argument unpacking. Kernels run synchronously on the calling (JS) thread and
// use OpenMP, through oneDNN or directly, for parallelism.
#pragma once
#include <napi.h>
#include <dnnl.hpp>
#include <cstdint>
#include <vector>

namespace pn {

// Codes the TypeScript side passes as plain numbers. src/accel/onednn/ops.ts mirrors every enum here, name for
// name and value for value, and tests/accel-op-codes.test.ts fails when the two disagree: change them together.
enum class BinaryOp : int { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3, kSquaredDiff = 4 };
enum class UnaryOp : int { kRelu = 0, kStep = 1, kSqrt = 2, kSquare = 3, kRsqrt = 4, kNeg = 5, kFloor = 6 };
// How an operand of binary() maps onto the output, which is processed as blocks of `inner` elements.
enum class Broadcast : int {
  kFull = 0,               // the output's index
  kPerElementOfBlock = 1,  // repeated for every block (index within the block)
  kPerBlock = 2,           // one value per block (index of the block)
  kScalar = 3,
};
// The activation convForward and matMul fuse into their output.
enum class Activation : int { kNone = 0, kRelu = 1 };
// sum(): over the leading rows of [rows, inner] (y[j]), or over the trailing elements of [outer, inner] (y[o]).
enum class SumMode : int { kLeadingRows = 0, kTrailing = 1 };

dnnl::engine& cpuEngine();
dnnl::stream& cpuStream();

// Raw pointer to a Float32Array's elements (zero-copy); null for JS null/undefined.
inline float* f32(const Napi::Value& v) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), "expected a Float32Array");
  }
  return v.As<Napi::Float32Array>().Data();
}

inline std::vector<int64_t> ints(const Napi::Value& v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(v.Env(), "expected an Int32Array of parameters");
  }
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int64_t>(a.Data(), a.Data() + a.ElementLength());
}

// Convolution geometry in tfjs terms (NHWC activations, HWIO or HWCM filters).
struct ConvGeom {
  int64_t n, h, w, c, oh, ow, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
  int64_t depthMult;  // 0: ordinary conv (HWIO filter); >0: depthwise (HWCM filter)
  static ConvGeom from(const std::vector<int64_t>& p);
};

void registerConv(Napi::Env env, Napi::Object exports);
void registerPool(Napi::Env env, Napi::Object exports);
void registerElementwise(Napi::Env env, Napi::Object exports);
void registerImage(Napi::Env env, Napi::Object exports);

}  // namespace pn
