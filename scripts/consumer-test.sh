#!/usr/bin/env bash
# Builds and tests tests/consumer/, a separate meson project, against zreap used
#   1. as a subproject (tests/consumer/subprojects/zreap -> this tree), in build-consumer-sub;
#   2. installed to a scratch prefix and found through pkg-config, in build-consumer-inst,
#      where a second test builds the same program with CMake against the installed CMake
#      package (find_package(zreap CONFIG), tests/consumer/CMakeLists.txt).
# Each ends with meson tests, so scripts/test.sh counts them in its summary line. Warnings
# are errors, as in every CI build.
# Usage: scripts/consumer-test.sh   (from anywhere; prints the two build dirs at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

setup() {  # setup BUILDDIR SOURCEDIR [meson options...]
  local dir=$1 src=$2; shift 2
  if [ -d "$dir/meson-private" ]; then
    meson setup --reconfigure "$dir" "$src" "$@" >/dev/null
  else
    meson setup "$dir" "$src" "$@" >/dev/null
  fi
  meson compile -C "$dir" >/dev/null
}

# No stale result may survive a step that fails before its own tests run: scripts/test.sh
# counts a missing test log as a failure.
rm -f build-consumer-sub/meson-logs/testlog.json build-consumer-inst/meson-logs/testlog.json

# 1. Subproject. The symlink is what a user's subprojects/ directory (or a wrap) provides.
mkdir -p tests/consumer/subprojects
ln -sfn ../../.. tests/consumer/subprojects/zreap
setup build-consumer-sub tests/consumer --force-fallback-for=zreap -Dexpect=subproject \
  -Dzreap:werror=true
meson test -C build-consumer-sub --print-errorlogs || true

# 2. Installed. A real install into a scratch prefix, so the generated zreap.pc is used
#    exactly as a distribution would ship it.
prefix=$root/build-consumer-prefix
setup build-consumer-lib . --prefix="$prefix" -Dtests=disabled -Dexamples=disabled \
  -Dbenchmarks=disabled -Ddocs=disabled -Dwerror=true
rm -rf "$prefix"
meson install -C build-consumer-lib >/dev/null
pcdir=$(dirname "$(find "$prefix" -name zreap.pc | head -n 1)")
PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
  setup build-consumer-inst tests/consumer --wrap-mode=nofallback -Dexpect=installed \
  -Dcmake_prefix="$prefix"
# No LD_LIBRARY_PATH: meson gives the program a RUNPATH from zreap.pc's -L, as it would
# for any library outside the system's directories.
meson test -C build-consumer-inst --print-errorlogs || true
