// Fast path for the common case: baseline 8-bit grayscale/YCbCr JPEGs decoded straight to luma by
// libjpeg-turbo (no chroma upsampling or colour conversion), then resized here with the same antialiased
// triangle filter as resizeGray() in decode.ts (same double arithmetic, so results match it exactly).
// Anything unusual (not JPEG, CMYK, 12-bit, corrupt, truncated, any libjpeg warning, oversize) is reported as
// "not handled" and decoded by the general sharp path in decode.ts, which also words the skip reasons.
#include <napi.h>
#include <csetjmp>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>
extern "C" {
#include <jpeglib.h>
}

namespace {

const double kMaxPixels = 20000.0 * 20000.0;

struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  bool warned;
};

void OnError(j_common_ptr cinfo) {
  ErrorManager* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  longjmp(err->jump, 1);
}

void OnMessage(j_common_ptr cinfo, int level) {
  // level -1 is a warning (e.g. premature end of data): the general path decides what to do with the file.
  if (level < 0) reinterpret_cast<ErrorManager*>(cinfo->err)->warned = true;
}

void Silent(j_common_ptr) {}

struct AxisWeights {
  std::vector<int> start, count;
  std::vector<double> weights;
  int maxTaps;
};

AxisWeights MakeWeights(int inLen, double from, double span, int outLen) {
  AxisWeights a;
  double scale = span / outLen;
  double filterScale = std::max(scale, 1.0);
  double support = filterScale;
  a.maxTaps = static_cast<int>(std::ceil(support)) * 2 + 1;
  a.start.assign(outLen, 0);
  a.count.assign(outLen, 0);
  a.weights.assign(static_cast<size_t>(outLen) * a.maxTaps, 0.0);
  for (int o = 0; o < outLen; o++) {
    double centre = from + (o + 0.5) * scale;
    int lo = std::max(0, static_cast<int>(std::floor(centre - support)));
    int hi = std::min(inLen, static_cast<int>(std::ceil(centre + support)));
    double total = 0;
    int n = 0;
    for (int i = lo; i < hi && n < a.maxTaps; i++, n++) {
      double w = std::max(0.0, 1 - std::fabs((i + 0.5 - centre) / filterScale));
      a.weights[o * a.maxTaps + n] = w;
      total += w;
    }
    if (total > 0)
      for (int k = 0; k < n; k++) a.weights[o * a.maxTaps + k] /= total;
    a.start[o] = lo;
    a.count[o] = n;
  }
  return a;
}

// How the image is placed in the size x size output (mirrors placement() in src/data/pixels.ts). The codes are
// decodeBatch's `fit`; src/accel/jpeg.ts mirrors them (JpegFit) and tests/accel-op-codes.test.ts checks the two agree.
enum class Fit : int { kFill = 0, kCover = 1, kContain = 2 };

void Resize(const unsigned char* src, int w, int h, int size, Fit fit, unsigned char* out) {
  double sx = 0, sy = 0, sw = w, sh = h;
  int dx = 0, dy = 0, dw = size, dh = size;
  if (fit == Fit::kCover) {
    double side = std::min(w, h);
    sx = (w - side) / 2;
    sy = (h - side) / 2;
    sw = sh = side;
  } else if (fit == Fit::kContain) {
    double scale = static_cast<double>(size) / std::max(w, h);
    dw = std::max(1, static_cast<int>(std::floor(w * scale + 0.5)));
    dh = std::max(1, static_cast<int>(std::floor(h * scale + 0.5)));
    dx = (size - dw) / 2;
    dy = (size - dh) / 2;
  }
  std::memset(out, 0, static_cast<size_t>(size) * size);
  AxisWeights xw = MakeWeights(w, sx, sw, dw);
  AxisWeights yw = MakeWeights(h, sy, sh, dh);
  int colLo = xw.start[0];
  int colHi = xw.start[dw - 1] + xw.count[dw - 1];
  int span = colHi - colLo;
  std::vector<double> row(span);
  for (int y = 0; y < dh; y++) {
    std::fill(row.begin(), row.end(), 0.0);
    int base = y * yw.maxTaps;
    for (int k = 0; k < yw.count[y]; k++) {
      double weight = yw.weights[base + k];
      const unsigned char* s = src + static_cast<size_t>(yw.start[y] + k) * w + colLo;
      for (int x = 0; x < span; x++) row[x] += s[x] * weight;
    }
    unsigned char* o = out + static_cast<size_t>(dy + y) * size + dx;
    for (int x = 0; x < dw; x++) {
      int first = xw.start[x] - colLo;
      int wb = x * xw.maxTaps;
      double acc = 0;
      for (int k = 0; k < xw.count[x]; k++) acc += row[first + k] * xw.weights[wb + k];
      o[x] = acc <= 0 ? 0 : acc >= 255 ? 255 : static_cast<unsigned char>(std::floor(acc + 0.5));
    }
  }
}

bool ReadFile(const std::string& path, std::vector<unsigned char>& data) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  data.clear();
  unsigned char chunk[65536];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) data.insert(data.end(), chunk, chunk + n);
  std::fclose(f);
  return true;
}

// Returns true and fills `out` (size*size) when the fast path handled the file.
bool DecodeOne(const std::string& path, int size, Fit fit, std::vector<unsigned char>& file,
               std::vector<unsigned char>& gray, unsigned char* out) {
  if (!ReadFile(path, file) || file.size() < 4 || file[0] != 0xFF || file[1] != 0xD8) return false;
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnError;
  err.pub.emit_message = OnMessage;
  err.pub.output_message = Silent;
  err.warned = false;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, file.data(), static_cast<unsigned long>(file.size()));
  jpeg_read_header(&cinfo, TRUE);
  bool plain = cinfo.data_precision == 8 && cinfo.num_components == (cinfo.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3) &&
               (cinfo.jpeg_color_space == JCS_GRAYSCALE || cinfo.jpeg_color_space == JCS_YCbCr) &&
               static_cast<double>(cinfo.image_width) * cinfo.image_height <= kMaxPixels && !err.warned;
  if (!plain) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = JCS_GRAYSCALE;
  // DCT-domain downscaling for large inputs, keeping at least twice the output size (as the general path does).
  unsigned int denom = 1;
  while (denom < 8 && cinfo.image_width / (denom * 2) >= static_cast<unsigned>(2 * size) &&
         cinfo.image_height / (denom * 2) >= static_cast<unsigned>(2 * size))
    denom *= 2;
  cinfo.scale_num = 1;
  cinfo.scale_denom = denom;
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);
  int w = cinfo.output_width, h = cinfo.output_height;
  gray.resize(static_cast<size_t>(w) * h);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rowp = gray.data() + static_cast<size_t>(cinfo.output_scanline) * w;
    jpeg_read_scanlines(&cinfo, &rowp, 1);
  }
  jpeg_finish_decompress(&cinfo);
  bool warned = err.warned;
  jpeg_destroy_decompress(&cinfo);
  if (warned) return false;
  Resize(gray.data(), w, h, size, fit, out);
  return true;
}

class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, std::vector<std::string> paths, int size, Fit fit)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), paths_(std::move(paths)),
        size_(size), fit_(fit) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    size_t per = static_cast<size_t>(size_) * size_;
    pixels_.assign(paths_.size() * per, 0);
    ok_.assign(paths_.size(), 0);
    std::vector<unsigned char> file, gray;
    for (size_t i = 0; i < paths_.size(); i++) ok_[i] = DecodeOne(paths_[i], size_, fit_, file, gray, pixels_.data() + i * per);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object result = Napi::Object::New(env);
    result.Set("pixels", Napi::Buffer<unsigned char>::Copy(env, pixels_.data(), pixels_.size()));
    result.Set("ok", Napi::Buffer<unsigned char>::Copy(env, ok_.data(), ok_.size()));
    deferred_.Resolve(result);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<std::string> paths_;
  int size_;
  Fit fit_;
  std::vector<unsigned char> pixels_, ok_;
};

// decodeBatch(paths: string[], size: number, fit: 0|1|2): Promise<{ pixels: Buffer, ok: Buffer }>
Napi::Value DecodeBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsNumber() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "decodeBatch(paths: string[], size: number, fit: 0|1|2)").ThrowAsJavaScriptException();
    return env.Null();
  }
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::string> paths;
  paths.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) paths.push_back(arr.Get(i).As<Napi::String>().Utf8Value());
  int size = info[1].As<Napi::Number>().Int32Value();
  int fit = info[2].As<Napi::Number>().Int32Value();
  if (size < 1 || size > 4096 || fit < 0 || fit > 2) {
    Napi::RangeError::New(env, "size must be 1..4096 and fit 0..2").ThrowAsJavaScriptException();
    return env.Null();
  }
  BatchWorker* worker = new BatchWorker(env, std::move(paths), size, static_cast<Fit>(fit));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeBatch", Napi::Function::New(env, DecodeBatch));
#ifdef LIBJPEG_TURBO_VERSION
#define JG_STR2(x) #x
#define JG_STR(x) JG_STR2(x)
  exports.Set("libjpeg", Napi::String::New(env, "libjpeg-turbo " JG_STR(LIBJPEG_TURBO_VERSION)));
#else
  exports.Set("libjpeg", Napi::String::New(env, "libjpeg"));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(jpeg_gray, Init)
