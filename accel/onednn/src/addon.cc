#include "common.h"
#include <omp.h>
#include <malloc.h>
#include <cstdlib>
#include <cstring>

namespace pn {

dnnl::engine& cpuEngine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}
dnnl::stream& cpuStream() {
  static dnnl::stream s(cpuEngine());
  return s;
}

}  // namespace pn

static Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n > 0) omp_set_num_threads(n);
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

static Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

static Napi::Value Version(const Napi::CallbackInfo& info) {
  const dnnl_version_t* v = dnnl_version();
  char buf[64];
  snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
  return Napi::String::New(info.Env(), buf);
}

// The float lanes of this build's hand-written loops (common.h's kLanes: 16 with AVX-512, 8 with AVX2, 4 with SSE),
// which the compiler's -march (binding.gyp, PNEUMO_NATIVE_MARCH) decides.
static Napi::Value VectorLanes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pn::kLanes); }

// Activations of a 150x150 batch are 10-50 MB each and live for one op. glibc serves blocks
// over 32 MB with fresh mmap()s, so every op would pay page faults and kernel zeroing for its
// output; raising the thresholds keeps such blocks in the reusable heap instead.
// PNEUMO_NATIVE_MALLOC=default leaves glibc's settings alone.
static void tuneMalloc() {
  const char* v = std::getenv("PNEUMO_NATIVE_MALLOC");
  if (v && std::strcmp(v, "default") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 512 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  tuneMalloc();
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads));
  exports.Set("dnnlVersion", Napi::Function::New(env, Version));
  exports.Set("vectorLanes", Napi::Function::New(env, VectorLanes));
  pn::registerConv(env, exports);
  pn::registerPool(env, exports);
  pn::registerElementwise(env, exports);
  pn::registerImage(env, exports);
  pn::registerSeparable(env, exports);
  return exports;
}

NODE_API_MODULE(pneumo_native, Init)
