#!/usr/bin/env bash
# Builds zreap with its benchmarks (release build, in build-bench/) and runs the whole
# comparison described in docs/performance.md:
#   bash scripts/bench.sh                  # everything, a few minutes
#   bash scripts/bench.sh --quick          # under a minute
#   bash scripts/bench.sh --out DIR ...    # any zreap-bench option (--help lists them)
# Prints the table; CSV files and SVG plots go to bench-out/ unless --out says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ZREAP_BENCH_PACKAGES=1 source scripts/install-deps.sh
dir=${ZREAP_BENCH_BUILD:-build-bench}
if [ -d "$dir/meson-private" ]; then
  meson setup --reconfigure "$dir" --buildtype=release -Dbenchmarks=enabled >/dev/null
else
  meson setup "$dir" --buildtype=release -Dbenchmarks=enabled >/dev/null
fi
meson compile -C "$dir" zreap-bench zreap-bench-child >/dev/null
exec "$dir/bench/zreap-bench" "$@"
