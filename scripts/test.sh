#!/usr/bin/env bash
# Installs what zreap needs (Debian 12), builds it and runs the whole test suite:
#   1. a normal build: unit tests, the contract suite once per compiled backend, and the
#      integration suites (the example programs driven by pyzmq: 'integration' for the
#      default backend, 'integration-all' once per compiled backend);
#   2. the same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# Ends with one line "N passed, N failed" counting every test case of every run, and exits
# non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

setup() {  # setup BUILDDIR [meson options...]
  local dir=$1; shift
  if [ -d "$dir/meson-private" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  meson compile -C "$dir"
}

dirs=()
setup build
dirs+=(build)
meson test -C build --print-errorlogs || true

setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=disabled
dirs+=(build-asan)
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs || true

python3 tests/summarize.py "${dirs[@]}"
