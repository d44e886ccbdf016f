#!/usr/bin/env bash
# Fails if the POSIX part of zreap (core/ except *_linux.cpp, the POSIX backends and the
# public headers) names a Linux-only path such as /proc or /sys. The -Dposix_strict=true
# build catches Linux-only calls and headers; a path is only a string, so it is looked
# for here. Registered as a meson test (tests/meson.build); also runs on its own.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
hits=$(grep -rnE '"/(proc|sys)/' core backends/selfpipe backends/sigaction backends/libev \
         include/zreap --include='*.cpp' --include='*.hpp' --include='*.in' 2>/dev/null |
       grep -v '_linux\.cpp:' || true)
if [ -n "$hits" ]; then
  echo "Linux-only paths in the POSIX part (move them to a *_linux.cpp file behind a probe):"
  echo "$hits"
  exit 1
fi
echo "no Linux-only paths in core/, the POSIX backends or include/zreap"
