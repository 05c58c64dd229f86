#!/bin/sh
# Builds the optional oneDNN addon (native/build/Release/pneumo_native.node).
# Missing prerequisites are not an error: it says in one line what to install and exits 0,
# so CI scripts and `npm ci` never depend on it. A real compile failure exits non-zero.
case "$0" in */*) cd "${0%/*}" || exit 1 ;; esac

missing=""
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
if [ ! -f /usr/include/dnnl.hpp ] && [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] \
   && [ ! -f /usr/local/include/dnnl.hpp ] && [ ! -f /usr/local/include/oneapi/dnnl/dnnl.hpp ]; then
  missing="$missing libdnnl-dev"
fi
if [ -n "$missing" ]; then
  echo "build:native skipped: missing$missing (install with: apt-get install -y$missing); the native backend stays off."
  exit 0
fi

gyp="../node_modules/.bin/node-gyp"
[ -x "$gyp" ] || gyp="npx --no-install node-gyp"
# Use the system's Node headers when npm has not said where they are (no downloads offline).
nodedir_flag=""
if [ -z "$npm_config_nodedir" ] && [ -f /usr/include/node/node_api.h ]; then nodedir_flag="--nodedir=/usr"; fi
if $gyp rebuild $nodedir_flag >build.log 2>&1; then
  echo "build:native ok: $(pwd)/build/Release/pneumo_native.node"
else
  tail -n 30 build.log
  echo "build:native FAILED (full log: native/build.log)"
  exit 1
fi
