#!/usr/bin/env bash
# Configures, builds and runs the CMake consumer (CMakeLists.txt) against the zreap
# installed under PREFIX with meson's C++ compiler (the last word of its command; a launcher
# such as ccache before it is left out). Usage: cmake_consumer.sh SRCDIR BUILDDIR PREFIX
# VERSION CXX...
set -euo pipefail
src=$1 build=$2 prefix=$3 version=$4
shift 4
rm -rf "$build"
CXX="${*: -1}" cmake -S "$src" -B "$build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DZREAP_EXPECT_VERSION="$version" -DCMAKE_BUILD_TYPE=Debug
cmake --build "$build"
"$build/consumer"
