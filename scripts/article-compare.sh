#!/usr/bin/env bash
# The article "ZeroMQ: poll() and wait for child process" beside pollchild, on the same
# burst: N children (default 200) that exit at the same moment. For each program and run
# it reads how many exits the program says it saw, and counts the zombies it has left
# while it is still alive. Prints a Markdown table (the one in docs/examples.md).
#
#   bash scripts/article-compare.sh [--children N] [--runs R] [--build-dir DIR]
#
# The article's two signal-based ways are examples/article/sigchld_flag.cpp (a SIGCHLD
# handler sets a flag, checked after zmq_poll returns EINTR) and sigchld_signalfd.cpp (a
# signalfd in the zmq_poll items); neither calls waitpid, as in the article. pollchild runs
# once per compiled backend. Linux only (ps, signalfd). Builds what it runs first.
set -euo pipefail
cd "$(dirname "$0")/.."
children=200
runs=5
build=build
while [ $# -gt 0 ]; do
  case $1 in
    --children) children=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    *) echo "usage: $0 [--children N] [--runs R] [--build-dir DIR]" >&2; exit 2 ;;
  esac
done
if [ ! -d "$build/meson-private" ]; then meson setup "$build" >/dev/null; fi
targets=(examples/pollchild examples/article-sigchld-flag)
have_signalfd=0
if grep -q "article-sigchld-signalfd" "$build/build.ninja"; then
  targets+=(examples/article-sigchld-signalfd)
  have_signalfd=1
fi
ninja -C "$build" "${targets[@]}" >/dev/null

# burst_once PROGRAM ARGS...: prints "REPORTED ZOMBIES" for one run.
burst_once() {
  local line reported zombies pid
  coproc BURST { exec "$@" --burst "$children"; }
  pid=$BURST_PID
  while IFS= read -r -t 60 line <&"${BURST[0]}"; do
    if [[ $line =~ burst\ of\ [0-9]+\ exits:\ ([0-9]+)\ reported ]]; then
      reported=${BASH_REMATCH[1]}
      break
    fi
  done
  # The program waits for EOF on its stdin before it exits: its zombies are still there.
  zombies=$(ps --ppid "$pid" -o stat= | grep -c '^Z' || true)
  eval "exec ${BURST[1]}>&-"
  wait "$pid" || true
  echo "${reported:-?} $zombies"
}

# row LABEL HOW PROGRAM ARGS...: one table row, min-max over the runs.
row() {
  local label=$1 how=$2; shift 2
  local r z rmin= rmax= zmin= zmax= i
  for ((i = 0; i < runs; i++)); do
    read -r r z < <(burst_once "$@")
    if [ -z "$rmin" ] || [ "$r" -lt "$rmin" ]; then rmin=$r; fi
    if [ -z "$rmax" ] || [ "$r" -gt "$rmax" ]; then rmax=$r; fi
    if [ -z "$zmin" ] || [ "$z" -lt "$zmin" ]; then zmin=$z; fi
    if [ -z "$zmax" ] || [ "$z" -gt "$zmax" ]; then zmax=$z; fi
  done
  range() { if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi; }
  printf '| %s | %s | %s of %s | %s |\n' "$label" "$how" "$(range "$rmin" "$rmax")" "$children" \
    "$(range "$zmin" "$zmax")"
}

echo "burst of $children simultaneous exits, $runs runs each ($(uname -sr), $(nproc) CPUs)"
echo
echo "| program | how an exit reaches zmq_poll | exits reported | zombies left |"
echo "|---|---|---|---|"
row "article, signal flag" "SIGCHLD handler sets a flag, checked after EINTR; no waitpid" \
  "$build/examples/article-sigchld-flag"
if [ "$have_signalfd" = 1 ]; then
  row "article, signalfd" "signalfd in the poll items, one siginfo = one exit; no waitpid" \
    "$build/examples/article-sigchld-signalfd"
fi
for b in pidfd signalfd selfpipe sigaction libev; do
  # A backend that is not compiled in, or not usable here, makes pollchild fail at once.
  if "$build/examples/pollchild" --backend "$b" --burst 1 </dev/null >/dev/null 2>&1; then
    row "pollchild --backend $b" "zreap's $b backend, one watch_child per child" \
      "$build/examples/pollchild" --backend "$b"
  fi
done
