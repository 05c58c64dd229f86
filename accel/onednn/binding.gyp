{
  "targets": [
    {
      "target_name": "pneumo_native",
      "sources": ["src/addon.cc", "src/conv.cc", "src/pool.cc", "src/elementwise.cc", "src/image.cc", "src/separable.cc", "src/winograd.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-march=<!(node -p \"process.env.PNEUMO_NATIVE_MARCH || 'native'\")", "-fopenmp"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl"]
    }
  ]
}
