#!/usr/bin/env bash
# Installs what zreap needs (Debian 12), builds it and runs the whole test suite:
#   1. a normal build: unit, contract (once per compiled backend), fault, soak-short and
#      spawn tests, the integration suites (the example programs driven by pyzmq), then the
#      contract suite of one backend under valgrind;
#   2. the same suite under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the POSIX-only build (-Dposix_strict=true) and its suite;
#   4. a consumer project using zreap as a subproject, installed through pkg-config, and
#      installed through its CMake package;
#   5. the Doxygen API reference, where doxygen is installed;
#   6. the threaded tests under ThreadSanitizer (a build of the test programs only);
#   7. everything built again by clang++, and its unit, contract and spawn suites.
# Every build treats warnings as errors (-Dwerror=true; not a project default, so that it
# never reaches packagers or projects that use zreap as a subproject).
# Ends with one line "N passed, N failed" counting every test case of every run, and exits
# non-zero if anything failed. The full soak is not part of it: see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
started=$(date +%s)

configure() {  # configure BUILDDIR [meson options...]
  local dir=$1; shift
  if [ -d "$dir/meson-private" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi
  rm -f "$dir"/meson-logs/testlog*.json  # only this run's logs count in the summary
}
setup() {  # setup BUILDDIR [meson options...]
  configure "$@"
  meson compile -C "$1"
}

dirs=()
setup build -Dwerror=true
dirs+=(build)
meson test -C build --print-errorlogs || true
meson test -C build --suite valgrind --logbase testlog-valgrind --print-errorlogs || true

setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
  -Dbenchmarks=disabled
dirs+=(build-asan)
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --print-errorlogs || true

# 3. POSIX only: core and the POSIX backends compiled against POSIX.1-2008 alone
#    (-Dposix_strict=true: a Linux-only call or header there fails this build), without the
#    Linux-only backends, and the suite run on what is left (pipe + fcntl instead of pipe2).
setup build-posix -Dwerror=true -Dposix_strict=true -Dpidfd=disabled -Dsignalfd=disabled \
  -Dio_uring=disabled \
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
  meson setup build-docs -Dwerror=true -Ddocs=enabled -Dtests=disabled -Dexamples=disabled \
    -Dbenchmarks=disabled >/dev/null
  dirs+=(build-docs)
  meson test -C build-docs --no-rebuild --suite docs --print-errorlogs || true
else
  echo "test.sh: doxygen not installed, API reference not checked (ZREAP_DOCS=1 installs it)" >&2
fi

# ThreadSanitizer: tests/meson.build registers the threaded tests (suite 'threads', with a
# gtest filter) in this build only, and `meson test` builds only what those tests need.
configure build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false -Dexamples=disabled \
  -Dbenchmarks=disabled
dirs+=(build-tsan)
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  meson test -C build-tsan --suite threads --print-errorlogs || true

# 7. clang++ (Debian's clang 14): the whole tree, tests, examples and benchmarks included,
#    must build warning-free with it too. Of its tests only the unit, contract and spawn
#    suites run (about a minute on two cores): what differs between the compilers is the
#    code they generate for the library, which those suites drive through every backend;
#    the gcc builds above run everything else.
CXX=clang++ setup build-clang -Dwerror=true
dirs+=(build-clang)
meson test -C build-clang --suite unit --suite contract --suite spawn --print-errorlogs || true

echo "scripts/test.sh: $(( $(date +%s) - started )) s"
python3 tests/summarize.py "${dirs[@]}"
