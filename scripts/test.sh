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

# 3. POSIX only: core and the POSIX backends compiled against POSIX.1-2008 alone
#    (-Dposix_strict=true: a Linux-only call or header there fails this build), without the
#    Linux-only backends, and the suite run on what is left (pipe + fcntl instead of pipe2).
setup build-posix -Dposix_strict=true -Dpidfd=disabled -Dsignalfd=disabled \
  -Dexamples=disabled -Dbenchmarks=disabled
dirs+=(build-posix)
meson test -C build-posix --print-errorlogs || true

# 4. A separate project using zreap as a subproject and installed through pkg-config.
bash scripts/consumer-test.sh || echo "test.sh: consumer-test.sh failed" >&2
dirs+=(build-consumer-sub build-consumer-inst)

# 5. The Doxygen API reference, where doxygen is installed (ZREAP_DOCS=1 installs it).
#    A meson test runs doxygen, whose warnings are errors, so a gap counts as a failure;
#    --no-rebuild: it needs only the headers, not the library.
if command -v doxygen >/dev/null; then
  rm -rf build-docs
  meson setup build-docs -Ddocs=enabled -Dtests=disabled -Dexamples=disabled \
    -Dbenchmarks=disabled >/dev/null
  dirs+=(build-docs)
  meson test -C build-docs --no-rebuild --suite docs --print-errorlogs || true
else
  echo "test.sh: doxygen not installed, API reference not checked (ZREAP_DOCS=1 installs it)" >&2
fi

python3 tests/summarize.py "${dirs[@]}"
