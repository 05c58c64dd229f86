// Convolutions (ordinary and depthwise, forward and both gradients) and batched
// matmul on oneDNN, reading/writing tfjs tensor storage in place (NHWC, HWIO/HWCM).
#include "common.h"
#include <cstdlib>
#include <cstring>

namespace pn {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

ConvGeom ConvGeom::from(const std::vector<int64_t>& p) {
  if (p.size() != 18) throw std::runtime_error("conv parameters: expected 18 integers");
  return ConvGeom{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8],
                  p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16], p[17]};
}

namespace {

struct ConvDescs {
  dnnl::algorithm alg;
  memory::desc src, dst, userWeights, anyWeights;
  memory::dims strides, dilates, padL, padR;
};

// Winograd F(4x4, 3x3) computes a 3x3 convolution with about half the arithmetic of the direct one. oneDNN has it
// on AVX-512 only, and only for activations in its nChw16c layout, which for exactly 16 channels is NHWC byte for
// byte. Block 1's second conv (16 -> 16 channels at 150x150) is such a convolution and the largest of the network:
// about a third of a training step and of inference. On an AMD EPYC (Zen 4) with oneDNN 2.6, batch 32: forward
// 16 -> 10 ms, backward data 21 -> 14 ms, backward weights 18 -> 13 ms on their own; inside the bench's training
// steps the three primitives took 21.4 ms a call on average before, 15.7 ms after (oneDNN's verbose log).
// PNEUMO_NATIVE_WINOGRAD=0 turns it off (the direct algorithm, as on CPUs without AVX-512).
bool winogradFits(const ConvGeom& g) {
  static const bool enabled = [] {
    const char* v = std::getenv("PNEUMO_NATIVE_WINOGRAD");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled && g.depthMult == 0 && g.c == 16 && g.oc == 16 && g.kh == 3 && g.kw == 3 && g.sh == 1 &&
         g.sw == 1 && g.dh == 1 && g.dw == 1;
}

ConvDescs describe(const ConvGeom& g, bool winograd) {
  ConvDescs d;
  d.alg = winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  const tag activations = winograd ? tag::nChw16c : tag::nhwc;  // the same bytes when there are 16 channels
  d.src = memory::desc({g.n, g.c, g.h, g.w}, dt::f32, activations);
  d.dst = memory::desc({g.n, g.oc, g.oh, g.ow}, dt::f32, activations);
  if (g.depthMult == 0) {
    memory::dims wd{g.oc, g.c, g.kh, g.kw};
    d.userWeights = memory::desc(wd, dt::f32, tag::hwio);
    d.anyWeights = memory::desc(wd, dt::f32, tag::any);
  } else {
    // tfjs depthwise filter [KH, KW, C, M] seen as grouped weights {G=C, O=M, I=1, KH, KW}.
    const int64_t m = g.depthMult;
    memory::dims wd{g.c, m, 1, g.kh, g.kw};
    memory::dims ws{m, 1, 1, g.kw * g.c * m, g.c * m};
    d.userWeights = memory::desc(wd, dt::f32, ws);
    d.anyWeights = memory::desc(wd, dt::f32, tag::any);
  }
  d.strides = {g.sh, g.sw};
  d.dilates = {g.dh - 1, g.dw - 1};
  d.padL = {g.pt, g.pl};
  d.padR = {g.pb, g.pr};
  return d;
}

// The fused activation as a oneDNN post-op (none for Activation::kNone).
dnnl::primitive_attr activationAttr(Activation act) {
  dnnl::primitive_attr attr;
  if (act == Activation::kRelu) {
    dnnl::post_ops po;
    po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
  }
  return attr;
}

dnnl::convolution_forward::primitive_desc forwardPd(const ConvDescs& d, const memory::desc* bias,
                                                     Activation act) {
  using namespace dnnl;
  auto desc = bias ? convolution_forward::desc(prop_kind::forward_training, d.alg, d.src, d.anyWeights, *bias,
                                               d.dst, d.strides, d.dilates, d.padL, d.padR)
                   : convolution_forward::desc(prop_kind::forward_training, d.alg, d.src, d.anyWeights, d.dst,
                                               d.strides, d.dilates, d.padL, d.padR);
  return convolution_forward::primitive_desc(desc, activationAttr(act), cpuEngine());
}

// plan(descs) builds a primitive descriptor for the winograd descriptions where they fit and this CPU has an
// implementation, else for the direct ones. oneDNN says "unimplemented" by throwing while the descriptor is made.
template <typename Plan>
auto withWinogradIfAvailable(const ConvGeom& g, Plan plan) {
  if (winogradFits(g)) {
    try {
      return plan(describe(g, true));
    } catch (const dnnl::error&) {
    }
  }
  return plan(describe(g, false));
}

// Copies between the caller's layout and the primitive's preferred one when they differ.
memory toPrimitive(const memory::desc& want, const memory::desc& have, float* ptr) {
  memory user(have, cpuEngine(), ptr);
  if (want == have) return user;
  memory out(want, cpuEngine());
  dnnl::reorder(user, out).execute(cpuStream(), user, out);
  return out;
}

Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  // (x, filter, bias|null, y, params:Int32Array, activation: Activation)
  float* x = f32(info[0]);
  float* w = f32(info[1]);
  float* b = f32(info[2]);
  float* y = f32(info[3]);
  ConvGeom g = ConvGeom::from(ints(info[4]));
  Activation act = static_cast<Activation>(info[5].As<Napi::Number>().Int32Value());
  memory::desc biasMd({g.oc}, dt::f32, tag::a);
  ConvDescs d;
  auto pd = withWinogradIfAvailable(g, [&](const ConvDescs& descs) {
    d = descs;
    return forwardPd(d, b ? &biasMd : nullptr, act);
  });
  memory src(d.src, cpuEngine(), x), dst(d.dst, cpuEngine(), y);
  memory wei = toPrimitive(pd.weights_desc(), d.userWeights, w);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (b) args.insert({DNNL_ARG_BIAS, memory(biasMd, cpuEngine(), b)});
  dnnl::convolution_forward(pd).execute(cpuStream(), args);
  cpuStream().wait();
  return info.Env().Undefined();
}

Napi::Value ConvBackwardData(const Napi::CallbackInfo& info) {
  // (dy, filter, dx, params)
  float* dy = f32(info[0]);
  float* w = f32(info[1]);
  float* dx = f32(info[2]);
  ConvGeom g = ConvGeom::from(ints(info[3]));
  using namespace dnnl;
  ConvDescs d;
  auto pd = withWinogradIfAvailable(g, [&](const ConvDescs& descs) {
    d = descs;
    auto hint = forwardPd(d, nullptr, Activation::kNone);
    convolution_backward_data::desc desc(d.alg, d.src, d.anyWeights, d.dst, d.strides, d.dilates, d.padL, d.padR);
    return convolution_backward_data::primitive_desc(desc, cpuEngine(), hint);
  });
  memory diffDst(d.dst, cpuEngine(), dy), diffSrc(d.src, cpuEngine(), dx);
  memory wei = toPrimitive(pd.weights_desc(), d.userWeights, w);
  convolution_backward_data(pd).execute(
      cpuStream(), {{DNNL_ARG_DIFF_DST, diffDst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diffSrc}});
  cpuStream().wait();
  return info.Env().Undefined();
}

Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info) {
  // (x, dy, dfilter, params)
  float* x = f32(info[0]);
  float* dy = f32(info[1]);
  float* dw = f32(info[2]);
  ConvGeom g = ConvGeom::from(ints(info[3]));
  using namespace dnnl;
  ConvDescs d;
  auto pd = withWinogradIfAvailable(g, [&](const ConvDescs& descs) {
    d = descs;
    auto hint = forwardPd(d, nullptr, Activation::kNone);
    convolution_backward_weights::desc desc(d.alg, d.src, d.anyWeights, d.dst, d.strides, d.dilates, d.padL,
                                            d.padR);
    return convolution_backward_weights::primitive_desc(desc, cpuEngine(), hint);
  });
  memory src(d.src, cpuEngine(), x), diffDst(d.dst, cpuEngine(), dy);
  memory user(d.userWeights, cpuEngine(), dw);
  bool direct = pd.diff_weights_desc() == d.userWeights;
  memory diffWei = direct ? user : memory(pd.diff_weights_desc(), cpuEngine());
  convolution_backward_weights(pd).execute(
      cpuStream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diffDst}, {DNNL_ARG_DIFF_WEIGHTS, diffWei}});
  if (!direct) reorder(diffWei, user).execute(cpuStream(), diffWei, user);
  cpuStream().wait();
  return info.Env().Undefined();
}

Napi::Value MatMul(const Napi::CallbackInfo& info) {
  // (a, b, c, bias|null, params [batchA, batchB, M, K, N, transA, transB], activation)
  float* a = f32(info[0]);
  float* b = f32(info[1]);
  float* c = f32(info[2]);
  float* bias = f32(info[3]);
  auto p = ints(info[4]);
  if (p.size() != 7) throw std::runtime_error("matmul parameters: expected 7 integers");
  int64_t ba = p[0], bb = p[1], m = p[2], k = p[3], n = p[4];
  bool ta = p[5] != 0, tb = p[6] != 0;
  Activation act = static_cast<Activation>(info[5].As<Napi::Number>().Int32Value());
  int64_t bc = std::max(ba, bb);
  memory::desc aMd({ba, m, k}, dt::f32, ta ? memory::dims{m * k, 1, m} : memory::dims{m * k, k, 1});
  memory::desc bMd({bb, k, n}, dt::f32, tb ? memory::dims{k * n, 1, k} : memory::dims{k * n, n, 1});
  memory::desc cMd({bc, m, n}, dt::f32, tag::abc);
  memory::desc biasMd({1, 1, n}, dt::f32, tag::abc);
  using namespace dnnl;
  auto desc = bias ? matmul::desc(aMd, bMd, biasMd, cMd) : matmul::desc(aMd, bMd, cMd);
  matmul::primitive_desc pd(desc, activationAttr(act), cpuEngine());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(aMd, cpuEngine(), a)},
                                       {DNNL_ARG_WEIGHTS, memory(bMd, cpuEngine(), b)},
                                       {DNNL_ARG_DST, memory(cMd, cpuEngine(), c)}};
  if (bias) args.insert({DNNL_ARG_BIAS, memory(biasMd, cpuEngine(), bias)});
  matmul(pd).execute(cpuStream(), args);
  cpuStream().wait();
  return info.Env().Undefined();
}

}  // namespace

void registerConv(Napi::Env env, Napi::Object exports) {
  exports.Set("convForward", Napi::Function::New(env, ConvForward));
  exports.Set("convBackwardData", Napi::Function::New(env, ConvBackwardData));
  exports.Set("convBackwardWeights", Napi::Function::New(env, ConvBackwardWeights));
  exports.Set("matMul", Napi::Function::New(env, MatMul));
}

}  // namespace pn
