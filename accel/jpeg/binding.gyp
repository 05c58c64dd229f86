{
  "targets": [
    {
      "target_name": "jpeg_gray",
      "sources": ["jpeg_gray.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-O3", "-ffp-contract=off"],
      "libraries": ["-ljpeg"]
    }
  ]
}
