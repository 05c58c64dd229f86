// Convolutions (ordinary and depthwise, forward and both gradients) and batched
// matmul on oneDNN, reading/writing tfjs tensor storage in place (NHWC, HWIO/HWCM).
#include "common.h"
#include "pool.h"
#include "winograd.h"
#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

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
// about a third of a training step and of inference.
bool winogradFits(const ConvGeom& g) {
  return g.depthMult == 0 && g.c == 16 && g.oc == 16 && g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 &&
         g.dh == 1 && g.dw == 1;
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

// Whether Winograd pays depends on the CPU, so where it fits, the first call of each direction and geometry times
// the algorithms on that call's own buffers and keeps the fastest for the rest of the process: oneDNN's direct
// convolution, oneDNN's Winograd F(4x4, 3x3) where oneDNN has it (AVX-512 only), and our own F(2x2, 3x3) and
// F(4x4, 3x3) (winograd.cc). Measured with oneDNN 2.6, batch 32, block 1's 16 -> 16 conv at 150x150, 2 threads (ms,
// direct -> oneDNN's Winograd, our F(2x2), our F(4x4)):
//   AMD EPYC Zen 4:          forward 16 -> 10, backward data 21 -> 14, backward weights 18 -> 13 (before ours)
//   Intel Xeon (AVX-512, AMX):  forward 11.6 -> 23.6, 12.1, 9.0; data 11.8 -> 23.2, 14.1, 9.3; weights 10.6 -> 8.6,
//                               13.0, 9.7
//   the same Xeon capped at AVX2 (no oneDNN Winograd): forward 20.4 -> 14.5, 11.5; data 15.6 -> 13.6, 11.0; weights
//                               21.3 -> 13.6, 10.4
// A Winograd must win by a clear margin (kWinogradMargin): near a tie the direct algorithm stays, so the choice,
// and with it the last bits of the results, does not flip between runs on one machine with timing noise.
// PNEUMO_NATIVE_WINOGRAD=0 (or setConvAlgorithm('direct')) never uses one, =1 ('winograd') always where one fits
// (oneDNN's first, else our F(4x4)), =2x2 ('winograd2x2') and =4x4 ('winograd4x4') ours wherever it fits; unset or
// 'auto' measures.
enum class ConvAlgorithm { kAuto, kDirect, kWinograd, kWinograd2x2, kWinograd4x4 };
constexpr double kWinogradMargin = 0.85;  // a Winograd's time must be under 85% of the direct one's

ConvAlgorithm& convAlgorithm() {
  static ConvAlgorithm mode = [] {
    const char* v = std::getenv("PNEUMO_NATIVE_WINOGRAD");
    if (v && std::strcmp(v, "0") == 0) return ConvAlgorithm::kDirect;
    if (v && std::strcmp(v, "1") == 0) return ConvAlgorithm::kWinograd;
    if (v && std::strcmp(v, "2x2") == 0) return ConvAlgorithm::kWinograd2x2;
    if (v && std::strcmp(v, "4x4") == 0) return ConvAlgorithm::kWinograd4x4;
    return ConvAlgorithm::kAuto;
  }();
  return mode;
}

enum class Direction : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };
enum class Algorithm : int { kDirect = 0, kOnednnWinograd = 1, kWinograd2x2 = 2, kWinograd4x4 = 3 };
// Their names in convAlgorithmChoices' and setConvAlgorithmChoices' lists, by value.
constexpr const char* kDirectionNames[] = {"forward", "backwardData", "backwardWeights"};
constexpr const char* kAlgorithmNames[] = {"direct", "winograd", "winograd2x2", "winograd4x4"};

struct Choice {
  Algorithm algorithm;
  // The faster of two timed calls each; -1 where the algorithm does not exist for the convolution.
  double winogradMs, winograd2x2Ms, winograd4x4Ms, directMs;
};

using ChoiceKey = std::pair<int, std::vector<int64_t>>;
std::map<ChoiceKey, Choice>& choices() {
  static std::map<ChoiceKey, Choice> m;
  return m;
}

ChoiceKey choiceKey(Direction dir, const ConvGeom& g) {
  return {static_cast<int>(dir), {g.n, g.h, g.w, g.c, g.oh, g.ow, g.oc, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.pb, g.pr}};
}

template <typename Run>
double fastestOfTwo(Run run) {
  double best = 1e300;
  for (int i = 0; i < 2; i++) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Runs the convolution with the algorithm chosen as above: `run(winograd)` runs oneDNN's direct or Winograd one
// (throwing dnnl::error where oneDNN has no implementation of it: its "unimplemented" while making the
// descriptor), `own(tile)` our F(2x2) or F(4x4).
template <typename Run>
void runWithChosenAlgorithm(Direction dir, const ConvGeom& g, Run run, const std::function<void(WinogradTile)>& own) {
  const ConvAlgorithm mode = convAlgorithm();
  if (mode == ConvAlgorithm::kDirect || !winogradFits(g)) return run(false);
  const bool ownFits = ownWinogradFits(g);
  if (mode == ConvAlgorithm::kWinograd2x2 || mode == ConvAlgorithm::kWinograd4x4) {
    if (!ownFits) return run(false);
    return own(mode == ConvAlgorithm::kWinograd4x4 ? WinogradTile::k4x4 : WinogradTile::k2x2);
  }
  if (mode == ConvAlgorithm::kWinograd) {
    try {
      return run(true);
    } catch (const dnnl::error&) {
    }
    return ownFits ? own(WinogradTile::k4x4) : run(false);
  }
  auto execute = [&](Algorithm a) {
    if (a == Algorithm::kWinograd2x2) own(WinogradTile::k2x2);
    else if (a == Algorithm::kWinograd4x4) own(WinogradTile::k4x4);
    else run(a == Algorithm::kOnednnWinograd);
  };
  const ChoiceKey key = choiceKey(dir, g);
  auto known = choices().find(key);
  if (known != choices().end()) return execute(known->second.algorithm);
  Choice c{Algorithm::kDirect, -1, -1, -1, 0};
  try {
    run(true);  // creates the primitive (JIT), untimed
    c.winogradMs = fastestOfTwo([&] { run(true); });
  } catch (const dnnl::error&) {
  }
  if (ownFits) {
    for (WinogradTile tile : {WinogradTile::k2x2, WinogradTile::k4x4}) {
      own(tile);
      (tile == WinogradTile::k2x2 ? c.winograd2x2Ms : c.winograd4x4Ms) = fastestOfTwo([&] { own(tile); });
    }
  }
  run(false);
  c.directMs = fastestOfTwo([&] { run(false); });
  double best = kWinogradMargin * c.directMs;
  if (c.winogradMs >= 0 && c.winogradMs < best) c.algorithm = Algorithm::kOnednnWinograd, best = c.winogradMs;
  if (c.winograd2x2Ms >= 0 && c.winograd2x2Ms < best) c.algorithm = Algorithm::kWinograd2x2, best = c.winograd2x2Ms;
  if (c.winograd4x4Ms >= 0 && c.winograd4x4Ms < best) c.algorithm = Algorithm::kWinograd4x4;
  choices()[key] = c;
  if (c.algorithm != Algorithm::kDirect) execute(c.algorithm);  // the output is the chosen algorithm's
}

// Copies between the caller's layout and the primitive's preferred one when they differ.
memory toPrimitive(const memory::desc& want, const memory::desc& have, float* ptr) {
  memory user(have, cpuEngine(), ptr);
  if (want == have) return user;
  memory out(want, cpuEngine());
  dnnl::reorder(user, out).execute(cpuStream(), user, out);
  return out;
}

bool isOneChannel3x3x16(const ConvGeom& g) {
  return g.c == 1 && g.oc == 16 && g.kh == 3 && g.kw == 3 && g.depthMult == 0 && g.dh == 1 && g.dw == 1;
}

// The forward pass of a one-channel 3x3 convolution with 16 outputs (the seed model's first layer), written out:
// oneDNN's kernels are built for many input channels and took 4.7 ms for 32x150x150 -> 16 (training and inference
// alike); this one broadcasts each input pixel against the 16 channels of a tap held in registers and writes each
// output pixel once, with its bias and ReLU. ReLU keeps NaN, as oneDNN's and tfjs's do.
void convForwardOneChannel3x3x16(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y,
                                 bool relu) {
  FloatsV taps[9][kParts16], start[kParts16];
  const FloatsV zero = {};
  for (int q = 0; q < kParts16; q++) {
    for (int t = 0; t < 9; t++) taps[t][q] = loadV(w + t * 16 + q * kLanes);
    start[q] = bias ? loadV(bias + q * kLanes) : zero;
  }
  const std::vector<float> zeros(static_cast<size_t>(g.w), 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < g.n * g.oh; row++) {
    const int64_t b = row / g.oh, r = row % g.oh;
    const float* in[3];  // the window's input rows; a row in the padding reads zeros
    for (int i = 0; i < 3; i++) {
      const int64_t xr = r * g.sh - g.pt + i;
      in[i] = xr >= 0 && xr < g.h ? x + (b * g.h + xr) * g.w : zeros.data();
    }
    float* out = y + row * g.ow * 16;
    for (int64_t col = 0; col < g.ow; col++) {
      FloatsV acc[kParts16];
      for (int q = 0; q < kParts16; q++) acc[q] = start[q];
      const int64_t c0 = col * g.sw - g.pl;
      const bool interior = c0 >= 0 && c0 + 2 < g.w;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
          if (!interior && (c0 + j < 0 || c0 + j >= g.w)) continue;  // a tap over the left or right padding
          const float v = in[i][c0 + j];
          for (int q = 0; q < kParts16; q++) acc[q] += v * taps[i * 3 + j][q];
        }
      for (int q = 0; q < kParts16; q++) {
        if (relu) acc[q] = (acc[q] > zero) | (acc[q] != acc[q]) ? acc[q] : zero;
        storeV(out + col * 16 + q * kLanes, acc[q]);
      }
    }
  }
}

// oneDNN's forward convolution, direct or Winograd (dnnl::error where it has no such implementation).
void onednnForward(const ConvGeom& g, const float* x, const float* w, const float* b, float* y, Activation act,
                   bool winograd) {
  memory::desc biasMd({g.oc}, dt::f32, tag::a);
  ConvDescs d = describe(g, winograd);
  auto pd = forwardPd(d, b ? &biasMd : nullptr, act);
  memory src(d.src, cpuEngine(), const_cast<float*>(x)), dst(d.dst, cpuEngine(), y);
  memory wei = toPrimitive(pd.weights_desc(), d.userWeights, const_cast<float*>(w));
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
  if (b) args.insert({DNNL_ARG_BIAS, memory(biasMd, cpuEngine(), const_cast<float*>(b))});
  dnnl::convolution_forward(pd).execute(cpuStream(), args);
  cpuStream().wait();
}

Napi::Value ConvForward(const Napi::CallbackInfo& info) {
  // (x, filter, bias|null, y, params:Int32Array, activation: Activation)
  const float* x = f32(info[0]);
  const float* w = f32(info[1]);
  const float* b = f32(info[2]);
  float* y = f32(info[3]);
  ConvGeom g = ConvGeom::from(ints(info[4]));
  Activation act = static_cast<Activation>(info[5].As<Napi::Number>().Int32Value());
  const bool relu = act == Activation::kRelu;
  if (isOneChannel3x3x16(g)) {
    convForwardOneChannel3x3x16(g, x, w, b, y, relu);
    return info.Env().Undefined();
  }
  runWithChosenAlgorithm(Direction::kForward, g, [&](bool winograd) { onednnForward(g, x, w, b, y, act, winograd); },
                         [&](WinogradTile tile) { ownWinogradForward(tile, g, x, w, b, y, relu); });
  return info.Env().Undefined();
}

// An activation-sized buffer kept between calls, for the fused kernels' fallbacks: the convolution's output where
// it cannot be pooled as it is made, or a pooling's gradient where it cannot be expanded as it is read.
float* outputScratch(const ConvGeom& g) {
  static std::vector<float> buffer;
  buffer.resize(static_cast<size_t>(g.n * g.oh * g.ow * g.oc));
  return buffer.data();
}

// The pooling after a convolution, checked against it.
PoolGeom pooledOutputOf(const ConvGeom& g, const Napi::Value& params, const char* kernel) {
  const PoolGeom p = PoolGeom::from(ints(params));
  if (p.n != g.n || p.h != g.oh || p.w != g.ow || p.c != g.oc)
    throw std::runtime_error(std::string(kernel) + ": the pooling's input is not the convolution's output");
  return p;
}

// A convolution followed by a max pooling: for inference (CONV_BIAS_RELU_MAX_POOL, src/accel/fused/inference.ts),
// and with `codes`, for training (CONV_BIAS_RELU_MAX_POOL_TRAIN, fused/train-pairs.ts), where the pooling is
// 2x2 / 2 and the codes (pool.h) stand in for the ReLU's output in the gradient. Where our Winograd runs the
// convolution and the pooling is 2x2 with stride 2, the output transform pools as it goes and the convolution's
// output (46 MB a batch of 32 for block 1) is never written out; otherwise the convolution writes it to a scratch
// buffer and the pooling reads it back, as the two kernels would. The convolution's algorithm is the plain forward
// pass's choice (the same geometry, timed the same way).
Napi::Value ConvForwardMaxPool(const Napi::CallbackInfo& info) {
  // (x, filter, bias|null, y, convParams, poolParams, activation, codes?); y is the pooling's output.
  const float* x = f32(info[0]);
  const float* w = f32(info[1]);
  const float* b = f32(info[2]);
  float* y = f32(info[3]);
  const ConvGeom g = ConvGeom::from(ints(info[4]));
  const PoolGeom p = pooledOutputOf(g, info[5], "convForwardMaxPool");
  const Activation act = static_cast<Activation>(info[6].As<Napi::Number>().Int32Value());
  const bool relu = act == Activation::kRelu;
  Code* codes = info.Length() > 7 && !info[7].IsUndefined() ? codesOf(info[7]) : nullptr;
  if (codes && (!codedPoolingFits(p) || !relu))
    throw std::runtime_error("convForwardMaxPool: codes only for a ReLU and a 2x2 / 2 pooling of 16k channels");
  auto viaScratch = [&](const std::function<void(float*)>& convolve) {
    float* out = outputScratch(g);
    convolve(out);
    if (codes) maxPoolForwardWithCodes(p, out, y, codes);
    else maxPoolForward(p, out, y);
  };
  if (isOneChannel3x3x16(g)) {
    viaScratch([&](float* out) { convForwardOneChannel3x3x16(g, x, w, b, out, relu); });
    return info.Env().Undefined();
  }
  const bool halving = nonOverlapping(p) && p.kh == 2 && p.kw == 2 && p.oh == g.oh / 2 && p.ow == g.ow / 2;
  runWithChosenAlgorithm(
      Direction::kForward, g,
      [&](bool winograd) { viaScratch([&](float* out) { onednnForward(g, x, w, b, out, act, winograd); }); },
      [&](WinogradTile tile) {
        if (halving) ownWinogradForwardMaxPool(tile, g, x, w, b, y, relu, codes);
        else viaScratch([&](float* out) { ownWinogradForward(tile, g, x, w, b, out, relu); });
      });
  return info.Env().Undefined();
}

void onednnBackwardData(const ConvGeom& g, float* dy, float* w, float* dx, bool winograd) {
  using namespace dnnl;
  ConvDescs d = describe(g, winograd);
  auto hint = forwardPd(d, nullptr, Activation::kNone);
  convolution_backward_data::desc desc(d.alg, d.src, d.anyWeights, d.dst, d.strides, d.dilates, d.padL, d.padR);
  convolution_backward_data::primitive_desc pd(desc, cpuEngine(), hint);
  memory diffDst(d.dst, cpuEngine(), dy), diffSrc(d.src, cpuEngine(), dx);
  memory wei = toPrimitive(pd.weights_desc(), d.userWeights, w);
  convolution_backward_data(pd).execute(
      cpuStream(), {{DNNL_ARG_DIFF_DST, diffDst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, diffSrc}});
  cpuStream().wait();
}

Napi::Value ConvBackwardData(const Napi::CallbackInfo& info) {
  // (dy, filter, dx, params)
  float* dy = f32(info[0]);
  float* w = f32(info[1]);
  float* dx = f32(info[2]);
  ConvGeom g = ConvGeom::from(ints(info[3]));
  runWithChosenAlgorithm(Direction::kBackwardData, g, [&](bool winograd) { onednnBackwardData(g, dy, w, dx, winograd); },
                         [&](WinogradTile tile) { ownWinogradBackwardData(tile, g, dy, w, dx); });
  return info.Env().Undefined();
}

void onednnBackwardWeights(const ConvGeom& g, float* x, float* dy, float* dw, bool winograd) {
  using namespace dnnl;
  ConvDescs d = describe(g, winograd);
  auto hint = forwardPd(d, nullptr, Activation::kNone);
  convolution_backward_weights::desc desc(d.alg, d.src, d.anyWeights, d.dst, d.strides, d.dilates, d.padL,
                                          d.padR);
  convolution_backward_weights::primitive_desc pd(desc, cpuEngine(), hint);
  memory src(d.src, cpuEngine(), x), diffDst(d.dst, cpuEngine(), dy);
  memory user(d.userWeights, cpuEngine(), dw);
  bool inPlace = pd.diff_weights_desc() == d.userWeights;
  memory diffWei = inPlace ? user : memory(pd.diff_weights_desc(), cpuEngine());
  convolution_backward_weights(pd).execute(
      cpuStream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diffDst}, {DNNL_ARG_DIFF_WEIGHTS, diffWei}});
  if (!inPlace) reorder(diffWei, user).execute(cpuStream(), diffWei, user);
  cpuStream().wait();
}

Napi::Value ConvBackwardWeights(const Napi::CallbackInfo& info) {
  // (x, dy, dfilter, params)
  float* x = f32(info[0]);
  float* dy = f32(info[1]);
  float* dw = f32(info[2]);
  ConvGeom g = ConvGeom::from(ints(info[3]));
  runWithChosenAlgorithm(Direction::kBackwardWeights, g,
                         [&](bool winograd) { onednnBackwardWeights(g, x, dy, dw, winograd); },
                         [&](WinogradTile tile) { ownWinogradBackwardFilter(tile, g, x, dy, nullptr, dw); });
  return info.Env().Undefined();
}

// The two gradients of the fused training pair's convolution (CONV_BIAS_RELU_MAX_POOL_TRAIN) from the pooling's dy
// and codes: what MaxPoolGradRelu's dx would be, expanded row by row inside our Winograd as it reads it (no 46 MB
// gradient written and read twice for block 1), or into the scratch buffer for oneDNN's algorithms. The same
// algorithm choices as the plain gradients', and the same values as MaxPoolGradRelu's dx given to them, to the bit.
PooledGrad pooledGradOf(const ConvGeom& g, const Napi::Value& dy, const Napi::Value& codes, const Napi::Value& params,
                        const char* kernel) {
  return PooledGrad::from(pooledOutputOf(g, params, kernel), dy, codes, kernel);
}

// The whole gradient expanded into the scratch buffer, for oneDNN's algorithms.
float* expandedInScratch(const ConvGeom& g, const PooledGrad& dy) {
  float* full = outputScratch(g);
  expandPooledGrad(dy, g.n, g.oh, g.ow, full);
  return full;
}

Napi::Value ConvBackwardDataPooled(const Napi::CallbackInfo& info) {
  // (dy, codes, filter, dx, convParams, poolParams); dy and codes are the pooling's.
  const ConvGeom g = ConvGeom::from(ints(info[4]));
  const PooledGrad dy = pooledGradOf(g, info[0], info[1], info[5], "convBackwardDataPooled");
  float* w = f32(info[2]);
  float* dx = f32(info[3]);
  runWithChosenAlgorithm(
      Direction::kBackwardData, g,
      [&](bool winograd) { onednnBackwardData(g, expandedInScratch(g, dy), w, dx, winograd); },
      [&](WinogradTile tile) { ownWinogradBackwardDataPooled(tile, g, dy, w, dx); });
  return info.Env().Undefined();
}

Napi::Value ConvBackwardWeightsPooled(const Napi::CallbackInfo& info) {
  // (x, dy, codes, dfilter, convParams, poolParams); dy and codes are the pooling's.
  const ConvGeom g = ConvGeom::from(ints(info[4]));
  float* x = f32(info[0]);
  const PooledGrad dy = pooledGradOf(g, info[1], info[2], info[5], "convBackwardWeightsPooled");
  float* dw = f32(info[3]);
  runWithChosenAlgorithm(
      Direction::kBackwardWeights, g,
      [&](bool winograd) { onednnBackwardWeights(g, x, expandedInScratch(g, dy), dw, winograd); },
      [&](WinogradTile tile) { ownWinogradBackwardFilter(tile, g, x, nullptr, &dy, dw); });
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

// setConvAlgorithm('auto' | 'direct' | 'winograd' | 'winograd2x2' | 'winograd4x4'): what PNEUMO_NATIVE_WINOGRAD
// sets at load (unset, 0, 1, 2x2, 4x4).
// Switching forgets the measured choices.
Napi::Value SetConvAlgorithm(const Napi::CallbackInfo& info) {
  const std::string mode = info[0].As<Napi::String>().Utf8Value();
  if (mode == "auto") convAlgorithm() = ConvAlgorithm::kAuto;
  else if (mode == "direct") convAlgorithm() = ConvAlgorithm::kDirect;
  else if (mode == "winograd") convAlgorithm() = ConvAlgorithm::kWinograd;
  else if (mode == "winograd2x2") convAlgorithm() = ConvAlgorithm::kWinograd2x2;
  else if (mode == "winograd4x4") convAlgorithm() = ConvAlgorithm::kWinograd4x4;
  else
    throw Napi::Error::New(info.Env(), "setConvAlgorithm: expected 'auto', 'direct', 'winograd', 'winograd2x2' or "
                                       "'winograd4x4', got '" + mode + "'");
  choices().clear();
  return info.Env().Undefined();
}

// The choices measured so far: [{direction, geometry, algorithm, winogradMs, winograd2x2Ms, winograd4x4Ms,
// directMs}], a time -1
// where that algorithm does not exist for the convolution.
Napi::Value ConvAlgorithmChoices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& [key, c] : choices()) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("direction", kDirectionNames[key.first]);
    Napi::Array geom = Napi::Array::New(env, key.second.size());
    for (uint32_t j = 0; j < key.second.size(); j++) geom.Set(j, Napi::Number::New(env, double(key.second[j])));
    o.Set("geometry", geom);
    o.Set("algorithm", kAlgorithmNames[static_cast<int>(c.algorithm)]);
    o.Set("winogradMs", c.winogradMs);
    o.Set("winograd2x2Ms", c.winograd2x2Ms);
    o.Set("winograd4x4Ms", c.winograd4x4Ms);
    o.Set("directMs", c.directMs);
    out.Set(i++, o);
  }
  return out;
}

// setConvAlgorithmChoices([{direction, geometry, algorithm, winogradMs, winograd2x2Ms, winograd4x4Ms, directMs}]):
// choices as convAlgorithmChoices lists them, timed by an earlier process on this machine (src/accel/onednn/
// conv-choices.ts), taken as if timed here: the same machine then runs the same algorithms, and a seed the same run.
Napi::Value SetConvAlgorithmChoices(const Napi::CallbackInfo& info) {
  // The position of `name` in `names`, or -1.
  auto indexOf = [](const auto& names, const std::string& name) {
    const auto at = std::find(std::begin(names), std::end(names), name);
    return at == std::end(names) ? -1 : static_cast<int>(at - std::begin(names));
  };
  Napi::Env env = info.Env();
  const Napi::Array list = info[0].As<Napi::Array>();
  std::vector<std::pair<ChoiceKey, Choice>> parsed;
  for (uint32_t i = 0; i < list.Length(); i++) {
    const Napi::Object o = list.Get(i).As<Napi::Object>();
    const int dir = indexOf(kDirectionNames, o.Get("direction").ToString().Utf8Value());
    const int alg = indexOf(kAlgorithmNames, o.Get("algorithm").ToString().Utf8Value());
    const Napi::Value geometry = o.Get("geometry");
    if (dir < 0 || alg < 0 || !geometry.IsArray() || geometry.As<Napi::Array>().Length() != 17)
      throw Napi::Error::New(env, "setConvAlgorithmChoices: choice " + std::to_string(i) +
                                      " is not {direction, geometry (17 integers), algorithm, times}");
    std::vector<int64_t> g(17);
    for (uint32_t j = 0; j < 17; j++) g[j] = geometry.As<Napi::Array>().Get(j).ToNumber().Int64Value();
    auto ms = [&](const char* key) { return o.Get(key).ToNumber().DoubleValue(); };
    parsed.push_back({{dir, g}, Choice{static_cast<Algorithm>(alg), ms("winogradMs"), ms("winograd2x2Ms"),
                                       ms("winograd4x4Ms"), ms("directMs")}});
  }
  for (auto& [key, choice] : parsed) choices()[key] = choice;  // all or nothing
  return env.Undefined();
}

}  // namespace

void registerConv(Napi::Env env, Napi::Object exports) {
  exports.Set("setConvAlgorithm", Napi::Function::New(env, SetConvAlgorithm));
  exports.Set("convAlgorithmChoices", Napi::Function::New(env, ConvAlgorithmChoices));
  exports.Set("setConvAlgorithmChoices", Napi::Function::New(env, SetConvAlgorithmChoices));
  exports.Set("convForward", Napi::Function::New(env, ConvForward));
  exports.Set("convForwardMaxPool", Napi::Function::New(env, ConvForwardMaxPool));
  exports.Set("convBackwardData", Napi::Function::New(env, ConvBackwardData));
  exports.Set("convBackwardWeights", Napi::Function::New(env, ConvBackwardWeights));
  exports.Set("convBackwardDataPooled", Napi::Function::New(env, ConvBackwardDataPooled));
  exports.Set("convBackwardWeightsPooled", Napi::Function::New(env, ConvBackwardWeightsPooled));
  exports.Set("matMul", Napi::Function::New(env, MatMul));
}

}  // namespace pn
