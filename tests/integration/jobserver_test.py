#!/usr/bin/env python3
"""Drives examples/jobserver with pyzmq, a client written by someone else than the server.

  jobserver_test.py --server PATH [--client PATH] [--backend NAME] [--timeout S]

The backend is --backend, else $ZREAP_BACKEND, else the library's default. Phases:

 1. 200 jobs (180 with mixed exit codes, signals, outputs and truncation, 20 long sleepers
    that are cancelled, two of them ignoring SIGTERM so that the grace period has to end in
    SIGKILL) and 10 malformed requests, all sent in a shuffled order over one DEALER socket.
    Every job must get exactly one result with the right outcome and output, every malformed
    request an error, every cancel an "ok".
 2. A queued job whose program is deleted before its turn gets a "result" with outcome
    "error" (spawn's ENOENT), and the server carries on; a job whose grandchild keeps its
    stdout open is answered when the job exits, not when the pipe closes.
 3. The server must still be healthy (ping: nothing running or queued) and have no child
    left, zombie or not; the C++ jobclient runs one job against it.
 4. SIGTERM with jobs running and queued: every one is answered, the server exits 0.

Exits 0 when all holds, 1 with the failures listed otherwise. Bounded by --timeout.
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from jobserver_lib import Failed, Server, check, children_of, job_children_of, recv, zmq

CAP = 4096       # --output-cap given to the server
GRACE_MS = 300   # --grace given to the server
MAX_JOBS = 8


def normal_jobs(n):
    """(argv, expected (outcome, detail, stdout, stderr, flags)) for n short jobs."""
    jobs = []
    for i in range(n):
        k = i % 6
        if k == 0:
            code = i % 7
            script = 'printf "out %s\\n" "$1"; printf "err %s\\n" "$1" >&2; exit "$2"'
            jobs.append((["sh", "-c", script, "sh", str(i), str(code)],
                         ("exit", str(code), f"out {i}\n".encode(), f"err {i}\n".encode(), "")))
        elif k == 1:
            jobs.append((["printf", "direct %s", str(i)],
                         ("exit", "0", f"direct {i}".encode(), b"", "")))
        elif k == 2:
            sig = 9 if i % 4 == 2 else 15
            jobs.append((["sh", "-c", f"printf partial; kill -{sig} $$"],
                         ("signal", str(sig), b"partial", b"", "")))
        elif k == 3:
            # Exactly the cap is not truncated; one byte more than that is.
            size = CAP if i % 12 == 3 else 10000
            flags = "" if size == CAP else "stdout-truncated"
            jobs.append((["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x"],
                         ("exit", "0", b"x" * CAP, b"", flags)))
        elif k == 4:
            jobs.append((["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' e >&2; exit 255"],
                         ("exit", "255", b"", b"e" * CAP, "stderr-truncated")))
        else:
            prog = "true" if i % 12 == 5 else "false"
            jobs.append(([prog], ("exit", "0" if prog == "true" else "1", b"", b"", "")))
    return jobs


MALFORMED = [
    [b""],                                    # only a delimiter: empty request
    [b"run"],                                 # empty argv
    [b"frobnicate", b"x"],                    # unknown request type
    [b"run", b"echo"] + [b"y" * 40000] * 2,   # a request over --max-request
    [b"run", b"/nonexistent/zreap-prog"],     # no such file
    [b"run", b"zreap-no-such-program"],       # not in PATH
    [b"cancel"],                              # missing id
    [b"cancel", b"abc"],                      # bad id
    [b"cancel", b"999999"],                   # no such job
    [b"run", b"echo"] + [b"a"] * 300,         # too many arguments
]


def start_server(args):
    return Server(args.server, ["--endpoint", "tcp://127.0.0.1:*", "--max-jobs", str(MAX_JOBS),
                                "--output-cap", str(CAP), "--grace", str(GRACE_MS)],
                  backend=args.backend)


def phase_jobs(args, sock, deadline, tmpdir):
    rng = random.Random(args.seed)
    items = [("job", argv, exp) for argv, exp in normal_jobs(180)]
    for i in range(20):
        if i < 2:
            marker = os.path.join(tmpdir, f"ready-{i}")
            argv = ["sh", "-c", f'trap "" TERM; touch {marker}; exec sleep 30']
            items.append(("sleeper", argv, marker))
        else:
            items.append(("sleeper", ["sleep", "30"], None))
    items += [("bad", frames, None) for frames in MALFORMED]
    rng.shuffle(items)
    # Six plain sleepers go first, so they take free slots and are cancelled while running;
    # the others land wherever the shuffle put them, mostly in the queue.
    first = [it for it in items if it[0] == "sleeper" and it[2] is None][:6]
    items = first + [it for it in items if not any(it is f for f in first)]

    pending = []           # expected immediate replies, in request order
    jobs = {}              # id -> (kind, argv, expected or marker)
    results = {}           # id -> result frames
    cancels_due = []       # (id, marker) of sleepers waiting to be cancelled
    errors = 0
    oks = 0
    start = time.monotonic()

    def send(frames, expect):
        sock.send_multipart(frames)
        pending.append(expect)

    for item in items:
        kind, payload, _ = item
        if kind == "bad":
            send(payload, ("error", payload))
        else:
            send([b"run"] + [a.encode() for a in payload], ("accepted", item))

    while len(results) < 200 or pending:
        # A TERM-ignoring sleeper is cancelled only once it has said it ignores SIGTERM,
        # so that the grace period really has to end in SIGKILL.
        for entry in list(cancels_due):
            job_id, marker = entry
            if marker is None or os.path.exists(marker):
                cancels_due.remove(entry)
                send([b"cancel", str(job_id).encode()], ("ok", job_id))
        waiting_for_marker = any(m for _, m in cancels_due)
        if waiting_for_marker and not sock.poll(20):
            check(time.monotonic() < deadline, "timed out waiting for a sleeper to start")
            continue
        msg = recv(sock, deadline)
        # A request that began with an empty frame had it taken as an envelope delimiter,
        # and its reply carries the delimiter back.
        delimited = msg[0] == b""
        if delimited:
            msg = msg[1:]
        kind = msg[0].decode()
        if kind == "result":
            check(len(msg) == 7, f"result with {len(msg)} frames")
            job_id = int(msg[1])
            check(job_id in jobs, f"result for unknown job {job_id}")
            check(job_id not in results, f"second result for job {job_id}")
            results[job_id] = msg
            continue
        check(pending, f"unexpected reply {msg[:2]}")
        expect, ctx = pending.pop(0)
        check(delimited == (expect == "error" and ctx == [b""]), f"delimiter on {msg[:2]}")
        check(kind == expect, f"expected {expect}, got {msg[:2]} (for {str(ctx)[:80]})")
        if kind == "accepted":
            job_id = int(msg[1])
            check(job_id not in jobs, f"job id {job_id} given twice")
            jobs[job_id] = ctx
            if ctx[0] == "sleeper":
                cancels_due.append((job_id, ctx[2]))
        elif kind == "error":
            errors += 1
        elif kind == "ok":
            check(int(msg[1]) == ctx, f"cancel reply for {msg[1]}, expected {ctx}")
            oks += 1
    elapsed = time.monotonic() - start

    check(len(jobs) == 200, f"{len(jobs)} jobs accepted")
    check(errors == len(MALFORMED), f"{errors} errors for {len(MALFORMED)} malformed requests")
    check(oks == 20, f"{oks} cancels acknowledged")
    cancelled_running = cancelled_queued = escalated = 0
    for job_id, (kind, argv, exp) in jobs.items():
        r = results[job_id]
        outcome, detail, out, err, flags = r[2].decode(), r[3].decode(), r[4], r[5], r[6].decode()
        if kind == "job":
            got = (outcome, detail, out, err, flags)
            check(got == exp, f"job {job_id} {argv}: got {got[:2]} {out[:40]!r} {err[:40]!r} "
                              f"{flags!r}, expected {exp[:2]} {exp[2][:40]!r} {exp[3][:40]!r} {exp[4]!r}")
        elif outcome == "cancelled":
            check(flags == "" and detail == "", f"job {job_id}: cancelled with {detail!r} {flags!r}")
            cancelled_queued += 1
        else:
            sig = "9" if exp else "15"   # exp is the marker of a TERM-ignoring sleeper
            check((outcome, detail, flags) == ("signal", sig, "cancelled"),
                  f"job {job_id} {argv}: cancel ended as {outcome} {detail} {flags!r}")
            cancelled_running += 1
            escalated += sig == "9"
    check(escalated == 2, f"{escalated} of 2 TERM-ignoring sleepers were killed after the grace")
    check(cancelled_running >= 8, f"only {cancelled_running} jobs were cancelled while running")
    # Nothing more may come: each job had exactly one result.
    check(not sock.poll(200), "a reply arrived after every job had its result")
    print(f"phase 1: 200 jobs answered ({cancelled_running} cancelled while running, "
          f"{cancelled_queued} while queued, {escalated} needed SIGKILL), "
          f"{errors} malformed requests refused, {elapsed:.2f} s, {200 / elapsed:.0f} jobs/s")


def phase_vanished(sock, deadline, tmpdir):
    script = os.path.join(tmpdir, "vanishing.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho never\n")
    os.chmod(script, 0o755)
    sleepers = []
    for _ in range(MAX_JOBS):
        sock.send_multipart([b"run", b"sleep", b"30"])
        msg = recv(sock, deadline)
        check(msg[0] == b"accepted", f"sleeper: {msg}")
        sleepers.append(msg[1])
    sock.send_multipart([b"run", script.encode()])
    msg = recv(sock, deadline)
    check(msg[0] == b"accepted", f"queued script: {msg}")
    script_id = msg[1]
    os.unlink(script)
    for job_id in sleepers:
        sock.send_multipart([b"cancel", job_id])
    results = {}
    oks = 0
    while len(results) < MAX_JOBS + 1 or oks < MAX_JOBS:
        msg = recv(sock, deadline)
        if msg[0] == b"ok":
            oks += 1
            continue
        check(msg[0] == b"result" and msg[1] not in results, f"phase 2: {msg[:2]}")
        results[msg[1]] = msg
    r = results[script_id]
    check(r[2] == b"error" and b"No such file" in r[3], f"vanished program: {r[2:4]}")
    print(f"phase 2: a queued job whose program vanished was answered: {r[3].decode()}")


def phase_grandchild(sock, deadline):
    """A grandchild keeps the job's stdout open after the job exits: the result must not
    wait for an EOF that comes only when the grandchild ends."""
    sock.send_multipart([b"run", b"sh", b"-c", b"sleep 30 & echo $!"])
    msg = recv(sock, deadline)
    check(msg[0] == b"accepted", f"grandchild job: {msg}")
    t0 = time.monotonic()
    r = recv(sock, min(deadline, t0 + 10))
    grandchild = int(r[4])
    os.kill(grandchild, signal.SIGKILL)
    check(r[0] == b"result" and r[2:4] == [b"exit", b"0"], f"grandchild job: {r[:4]}")
    print(f"phase 2b: a job whose grandchild holds its stdout answered in "
          f"{time.monotonic() - t0:.2f} s")


def phase_health(args, sock, proc, endpoint, deadline):
    sock.send_multipart([b"ping"])
    msg = recv(sock, deadline)
    check(msg[0] == b"pong", f"ping answered {msg}")
    check(b"running=0 queued=0 finished=210" in msg[1], f"ping: {msg[1]}")
    # Every child reaped: the server has no child process left, zombie or not.
    kids = job_children_of(proc.pid)
    check(not kids, f"server still has children {kids}")
    check(len(children_of(proc.pid)) == 1, "the server's warden is not running")
    if args.client:
        out = subprocess.run([args.client, "--endpoint", endpoint, "--timeout", "10000",
                              "run", "sh", "-c", "echo from-jobclient; exit 4"],
                             capture_output=True, timeout=15)
        text = out.stdout.decode()
        check(out.returncode == 4 and "exited with code 4" in text and "from-jobclient" in text,
              f"jobclient: rc {out.returncode}, {text!r}")
    print(f"phase 3: healthy ({msg[1].decode()}), no child left"
          + (", jobclient ok" if args.client else ""))


def phase_shutdown(sock, proc, deadline, tmpdir):
    marker = os.path.join(tmpdir, "ready-shutdown")
    sock.send_multipart([b"run", b"sh", b"-c", f'trap "" TERM; touch {marker}; exec sleep 30'.encode()])
    ids = {int(recv(sock, deadline)[1]): "stubborn"}
    while not os.path.exists(marker):
        check(time.monotonic() < deadline, "the TERM-ignoring job never started")
        time.sleep(0.01)
    for i in range(MAX_JOBS - 1 + 3):   # fill the other slots, then 3 queued
        sock.send_multipart([b"run", b"sleep", b"30"])
        msg = recv(sock, deadline)
        check(msg[0] == b"accepted", f"run during phase 3: {msg}")
        ids[int(msg[1])] = "running" if i < MAX_JOBS - 1 else "queued"
    sock.send_multipart([b"ping"])
    msg = recv(sock, deadline)
    check(b"running=8 queued=3" in msg[1], f"before SIGTERM: {msg[1]}")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    got = {}
    while len(got) < len(ids):
        msg = recv(sock, deadline)
        check(msg[0] == b"result", f"during shutdown: {msg[:2]}")
        job_id = int(msg[1])
        check(job_id in ids and job_id not in got, f"shutdown result for job {job_id}")
        got[job_id] = (msg[2].decode(), msg[3].decode(), msg[6].decode())
    for job_id, what in ids.items():
        want = {"stubborn": ("signal", "9", "cancelled shutdown"),
                "running": ("signal", "15", "cancelled shutdown"),
                "queued": ("cancelled", "", "shutdown")}[what]
        check(got[job_id] == want, f"{what} job {job_id} at shutdown: {got[job_id]}, want {want}")
    try:
        rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise Failed("server did not exit after SIGTERM")
    check(rc == 0, f"server exited with {rc} after SIGTERM")
    print(f"phase 4: SIGTERM answered all {len(ids)} jobs and exited 0 in "
          f"{time.monotonic() - t0:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--client")
    ap.add_argument("--backend", default=os.environ.get("ZREAP_BACKEND"))
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--seed", type=int, default=20240607)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    server = None
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            server = start_server(args)
            print(f"jobserver_test: backend {server.backend}, server at {server.endpoint}, "
                  f"seed {args.seed}")
            sock.connect(server.endpoint)
            phase_jobs(args, sock, deadline, tmpdir)
            phase_vanished(sock, deadline, tmpdir)
            phase_grandchild(sock, deadline)
            phase_health(args, sock, server.proc, server.endpoint, deadline)
            phase_shutdown(sock, server.proc, deadline, tmpdir)
    except Failed as e:
        print(f"FAILED: {e}")
        tail = server.log()[-2000:] if server else ""
        if tail:
            print("server stderr (tail):\n" + tail)
        return 1
    finally:
        sock.close()
        ctx.term()
        if server is not None:
            server.stop()
    print("jobserver_test: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
