#!/usr/bin/env bash
# Installs what zreap needs (Debian 12), builds the examples and runs the job server demo:
# CURVE keys for the server and two clients, examples/jobserver on a free loopback port
# with only alice's key authorized, jobs submitted with examples/jobclient (one succeeds,
# one fails, one is killed by a signal, one is cancelled by a second client holding the
# same key, one names a program that does not exist), a client with an unknown key
# refused, then SIGTERM stops the server. docs/examples.md explains what happens inside,
# docs/security.md what the keys defend against.
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
as_alice=(--server-key "$tmp/server.pub" --key "$tmp/alice.key")
show() {  # show [KEYS...] -- CMD...: echoes a jobclient command line, runs it, prints its exit status
  local keys=()
  while [ "$1" != -- ]; do keys+=("$1"); shift; done
  shift
  printf '$ jobclient'
  local a
  for a in "${keys[@]}" "$@"; do
    a=${a//$tmp\//}
    if [[ $a =~ ^[A-Za-z0-9_./=:-]+$ ]]; then printf ' %s' "$a"; else printf " '%s'" "$a"; fi
  done
  printf '\n'
  local rc=0
  "$client" --endpoint "$endpoint" "${keys[@]}" "$@" || rc=$?
  printf '(jobclient exit status %d)\n' "$rc"
}

step "make CURVE keys: the server's, alice's (authorized) and mallory's (not)"
"$server" --keygen "$tmp/server" | sed "s|$tmp/||g"
"$client" keygen "$tmp/alice" | sed "s|$tmp/||g" | tee "$tmp/alice.txt"
"$client" keygen "$tmp/mallory" >/dev/null
# The authorized keys, one per line with a name for the log, as keygen suggests.
sed -n 's/^for the server.s --curve-clients file: //p' "$tmp/alice.txt" >"$tmp/clients"

step "start the job server on a free loopback port, CURVE on"
# The server prints where it listens as its first line; a fifo hands that line over
# without polling a file.
mkfifo "$tmp/out"
"$server" --endpoint 'tcp://127.0.0.1:*' --max-jobs 4 --grace 1000 \
  --curve-secret "$tmp/server.key" --curve-clients "$tmp/clients" >"$tmp/out" 2>"$tmp/log" &
server_pid=$!
exec 3<"$tmp/out"
read -r -t 10 -u 3 banner || { echo "demo: the job server did not start"; cat "$tmp/log"; exit 1; }
echo "$banner"
endpoint=$(sed -n 's/^jobserver: listening on \([^ ]*\).*/\1/p' <<<"$banner")

step "a job that succeeds, with output on stdout and stderr"
show "${as_alice[@]}" -- run sh -c 'echo "hello from job $$ on $(uname -sr)"; echo "a note on stderr" >&2'

step "a job that fails"
show "${as_alice[@]}" -- run sh -c 'echo "cannot find the input file" >&2; exit 3'

step "a job killed by a signal"
show "${as_alice[@]}" -- run sh -c 'echo "about to be killed"; kill -KILL $$'

step "a job cancelled by another client with the same key"
# The first client waits for its result in the background; its first line carries the job
# id, which a second client cancels. The job runs in a process group of its own: the
# server sends SIGTERM to the whole group (the shell and the sleep it forked), SIGKILL
# after a grace period. Only a client holding the key that ran the job may cancel it.
coproc SLEEPER { "$client" --endpoint "$endpoint" "${as_alice[@]}" run sh -c 'sleep 60; echo never'; }
sleeper_pid=$SLEEPER_PID
exec 4<&"${SLEEPER[0]}"
read -r -t 10 -u 4 accepted
printf "\$ jobclient --server-key server.pub --key alice.key run sh -c 'sleep 60; echo never' &\n%s\n" "$accepted"
job_id=$(awk '{print $2}' <<<"$accepted")
show "${as_alice[@]}" -- cancel "$job_id"
cat <&4
rc=0
wait "$sleeper_pid" || rc=$?
printf '(jobclient exit status %d)\n' "$rc"

step "a program that does not exist"
show "${as_alice[@]}" -- run no-such-program --flag

step "a client whose key is not authorized, and one without CURVE"
show --server-key "$tmp/server.pub" --key "$tmp/mallory.key" -- run sh -c 'cat /etc/shadow'
show --timeout 3000 -- ping

step "the server is still healthy"
show "${as_alice[@]}" -- ping

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
