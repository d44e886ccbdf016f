#!/usr/bin/env bash
# Installs zreap's build and test dependencies from Debian 12's packages.
# Sourced by scripts/test.sh and scripts/demo.sh; runs apt-get through sudo when not root.
set -euo pipefail
packages=(
  g++ meson ninja-build pkg-config python3 python3-zmq
  libzmq3-dev cppzmq-dev libev-dev liburing-dev
  libgtest-dev libgmock-dev
  libseccomp-dev valgrind clang-format git
  clang cmake  # the clang++ build and the CMake consumer test (scripts/test.sh)
)
if [ "${ZREAP_DOCS:-0}" = 1 ]; then
  packages+=(doxygen)  # only for the API reference (-Ddocs=enabled); large, so opt-in
fi
if [ -n "${ZREAP_BENCH_PACKAGES:-}" ]; then
  # Only for scripts/bench.sh: the peer libraries compared with, and the plotter.
  packages+=(libuv1-dev libglib2.0-dev libsystemd-dev gnuplot-nox)
fi
if [ -n "${ZREAP_EXTRA_PACKAGES:-}" ]; then
  # shellcheck disable=SC2206
  packages+=(${ZREAP_EXTRA_PACKAGES})
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
