// Shared helpers for the pneumo_native addon: one oneDNN CPU engine/stream and
// argument unpacking. Kernels run synchronously on the calling (JS) thread and
// use OpenMP, through oneDNN or directly, for parallelism.
#pragma once
#include <napi.h>
#include <dnnl.hpp>
#include <omp.h>
#include <cstdint>
#include <cstring>
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

// The 16-bit codes of training's fused conv + pooling (pool.h), which travel as an Int32Array (tfjs has no 16-bit
// dtype): two codes an element, zero-copy.
inline uint16_t* codesOf(const Napi::Value& v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(v.Env(), "expected an Int32Array of codes");
  auto a = v.As<Napi::TypedArray>();
  return reinterpret_cast<uint16_t*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
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

// The widest float vector the target has, as a GCC vector (AVX-512: 16 lanes, AVX/AVX2: 8, else SSE's 4), for the
// one-channel 3x3 x 16 layer's hand-written loops (the seed model's first layer): its 16 channels are kParts16 such
// vectors, whose sums then stay in registers. Wider than the target's own vectors GCC lowers them piece by piece
// and far slower (an AVX2 build of the first layer's forward pass took 27 ms with 16-lane vectors, against 3.3).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
constexpr int kParts16 = 16 / kLanes;
typedef float FloatsV __attribute__((vector_size(kLanes * sizeof(float))));

inline FloatsV loadV(const float* p) {
  FloatsV v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void storeV(float* p, FloatsV v) { std::memcpy(p, &v, sizeof v); }

// tfjs's step(x) with alpha (ReLU's mask with alpha 0): NaN where x is NaN. Written as two plain selects: GCC does not
// if-convert the nested form for AVX2 (no mask registers), which left the loops using it scalar there.
inline float stepOf(float x, float alpha = 0.f) {
  const float positive = x > 0.f ? 1.f : alpha;
  return x != x ? x : positive;
}

// Per-column sums over `rows` rows of `width` columns: each thread takes one contiguous range of rows and adds them
// into its own row of doubles with rowRange(r0, r1, acc); the threads' rows are then added in thread order. The
// ranges and that order depend only on rows and the thread count, so every kernel built on this (Sum over leading
// rows, the batch-norm gradient's sums, the conv layers' bias sums) gives the same bits for the same values.
template <typename Out, typename RowRange>
void columnSumsByThread(int64_t rows, int64_t width, bool parallel, double scale, Out* out, RowRange rowRange) {
  const int threads = parallel ? omp_get_max_threads() : 1;
  std::vector<double> partial(static_cast<size_t>(threads) * width, 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    rowRange(rows * t / nt, rows * (t + 1) / nt, partial.data() + static_cast<size_t>(t) * width);
  }
  for (int64_t j = 0; j < width; j++) {
    double s = 0;
    for (int t = 0; t < threads; t++) s += partial[static_cast<size_t>(t) * width + j];
    out[j] = static_cast<Out>(s * scale);
  }
}

// The arguments an inference-mode batch-norm kernel starts with, (x, mean, variance, scale, offset, eps, ...), each
// vector C floats, read into y = (x - mean[c]) * multiplier[c] + offset[c] with multiplier = scale / sqrt(variance +
// eps) (in double, rounded once): BatchNorm (elementwise.cc) and BatchNormMaxPool (pool.cc) read them the same way,
// so their values agree to the bit.
struct BatchNormArgs {
  const float* x;
  const float* mean;
  const float* offset;
  std::vector<float> multiplier;
  static BatchNormArgs from(const Napi::CallbackInfo& info);
};

void registerConv(Napi::Env env, Napi::Object exports);
void registerPool(Napi::Env env, Napi::Object exports);
void registerElementwise(Napi::Env env, Napi::Object exports);
void registerImage(Napi::Env env, Napi::Object exports);
void registerSeparable(Napi::Env env, Napi::Object exports);

}  // namespace pn
