#!/usr/bin/env bash
# Installs what zreap needs (Debian 12), builds the examples and runs the job server demo:
# examples/jobserver on a free loopback port, jobs submitted with examples/jobclient (one
# succeeds, one fails, one is killed by a signal, one is cancelled by a second client, one
# names a program that does not exist), then SIGTERM stops the server. docs/examples.md
# explains what happens inside.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
if [ -d build/meson-private ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
meson compile -C build examples/jobserver examples/jobclient >/dev/null

server=./build/examples/jobserver
client=./build/examples/jobclient
tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {  # show CMD...: echoes a jobclient command line, runs it, prints its exit status
  printf '$ jobclient'
  local a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "$a"; fi
  done
  printf '\n'
  local rc=0
  "$client" --endpoint "$endpoint" --timeout 20000 "$@" || rc=$?
  printf '(jobclient exit status %d)\n' "$rc"
}

step "start the job server on a free loopback port"
# The server prints where it listens as its first line; a fifo hands that line over
# without polling a file.
mkfifo "$tmp/out"
"$server" --endpoint 'tcp://127.0.0.1:*' --max-jobs 4 --grace 1000 >"$tmp/out" 2>"$tmp/log" &
server_pid=$!
exec 3<"$tmp/out"
read -r -t 10 -u 3 banner || { echo "demo: the job server did not start"; cat "$tmp/log"; exit 1; }
echo "$banner"
endpoint=$(sed -n 's/^jobserver: listening on \([^ ]*\).*/\1/p' <<<"$banner")

step "a job that succeeds, with output on stdout and stderr"
show run sh -c 'echo "hello from job $$ on $(uname -sr)"; echo "a note on stderr" >&2'

step "a job that fails"
show run sh -c 'echo "cannot find the input file" >&2; exit 3'

step "a job killed by a signal"
show run sh -c 'echo "about to be killed"; kill -KILL $$'

step "a job cancelled by another client"
# The first client waits for its result in the background; its first line carries the job
# id, which a second client cancels. The server sends SIGTERM, SIGKILL after a grace period.
coproc SLEEPER { "$client" --endpoint "$endpoint" --timeout 20000 run sleep 60; }
sleeper_pid=$SLEEPER_PID
exec 4<&"${SLEEPER[0]}"
read -r -t 10 -u 4 accepted
printf '$ jobclient run sleep 60 &\n%s\n' "$accepted"
job_id=$(awk '{print $2}' <<<"$accepted")
show cancel "$job_id"
cat <&4
rc=0
wait "$sleeper_pid" || rc=$?
printf '(jobclient exit status %d)\n' "$rc"

step "a program that does not exist"
show run no-such-program --flag

step "the server is still healthy"
show ping

step "stop the server with SIGTERM"
kill -TERM "$server_pid"
rc=0
wait "$server_pid" || rc=$?
server_pid=
cat <&3
echo "server exit status: $rc"
echo "server log:"
sed 's/^/  /' "$tmp/log"
exit "$rc"
