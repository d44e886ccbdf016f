#!/usr/bin/env python3
"""Drives examples/pollchild (the article's program) with a pyzmq REQ client.

  pollchild_test.py --program PATH [--backend NAME] [--timeout S]

 1. --fast --generations 6: six children come and go while REQ requests are answered; the
    program ends by itself, exit 0, having reported six terminations and every message.
 2. SIGINT while a child sleeps for a minute: the child is ended and reaped through the
    loop, the program exits 0 at once.
 3. A request of two frames is echoed whole, both frames, in one reply.
 4. --sleep beyond a day is refused at start (3000000000 ms once overflowed an int).
 5. --burst 100: 100 children exit at once; the loop reports all 100 and leaves no zombie.
Exits 0 when all holds, 1 otherwise.
"""
import argparse
import glob
import os
import re
import select
import signal
import subprocess
import sys
import time

try:
    import zmq
except ImportError:
    sys.exit("pollchild_test: pyzmq is missing (Debian: apt-get install python3-zmq)")


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def start(args, extra):
    cmd = [args.program, "--endpoint", "tcp://127.0.0.1:*"] + extra
    if args.backend:
        cmd += ["--backend", args.backend]
    # Unbuffered: readline() must not swallow lines that communicate() reads later.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode() if ready else ""
    m = re.match(r"pollchild: backend (\w+), listening on (\S+)", line)
    if not m:
        proc.kill()
        raise Failed(f"pollchild did not start: {line!r}")
    check(not args.backend or m.group(1) == args.backend, f"backend {m.group(1)}")
    return proc, m.group(2)


def finish(proc, deadline):
    try:
        out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise Failed("pollchild did not end in time")
    return proc.returncode, out.decode()


def phase_generations(args, ctx, deadline):
    proc, endpoint = start(args, ["--fast", "--generations", "6"])
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(endpoint)
    for i in range(5):
        req.send(f"hello {i}".encode())
        check(req.poll(5000), f"request {i} not answered")
        check(req.recv() == f"hello {i}".encode(), "wrong echo")
    req.close()
    rc, out = finish(proc, deadline)
    check(rc == 0, f"exit status {rc}: {out}")
    sleeps = re.findall(r"^child: sleep\((0\.\d{3})\)$", out, re.M)
    terminated = re.findall(r"^child terminated \(pid \d+ exited with code 0\)$", out, re.M)
    check(len(sleeps) == 6 and all(0.05 <= float(s) <= 0.2 for s in sleeps), f"sleeps {sleeps}:\n{out}")
    check(len(terminated) == 6, f"{len(terminated)} terminations:\n{out}")
    check(out.count("0MQ messages received") == 5, f"messages:\n{out}")
    check("6 children terminated, 5 messages answered" in out, out)
    print("phase 1: 6 generations, 5 requests answered, exit 0")


def phase_sigint(args, deadline):
    proc, _ = start(args, ["--sleep", "60000", "60000"])
    line = proc.stdout.readline().decode()
    check(line.startswith("child: sleep(60)"), f"first child: {line!r}")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc, out = finish(proc, deadline)
    check(rc == 0, f"exit status {rc} after SIGINT: {out}")
    check(re.search(r"child terminated \(pid \d+ killed by signal 15", out), out)
    check("stopped by signal" in out, out)
    print(f"phase 2: SIGINT ended the child and the program in {time.monotonic() - t0:.2f} s")


def phase_multiframe(args, ctx, deadline):
    proc, endpoint = start(args, ["--sleep", "60000", "60000"])
    try:
        req = ctx.socket(zmq.REQ)
        req.linger = 0
        req.connect(endpoint)
        req.send_multipart([b"first", b"second"])
        check(req.poll(5000), "a two-frame request was not answered")
        reply = req.recv_multipart()
        check(reply == [b"first", b"second"], f"two-frame request echoed as {reply}")
        req.close()
    finally:
        proc.send_signal(signal.SIGINT)
        finish(proc, deadline)
    print("phase 3: a two-frame request was echoed whole")


def phase_bad_sleep(args, deadline):
    cmd = [args.program, "--endpoint", "tcp://127.0.0.1:*", "--sleep", "3000000000", "3000000000"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise Failed("--sleep 3000000000 was not refused")
    check(out.returncode == 2 and b"bad --sleep" in out.stderr,
          f"--sleep 3000000000: exit {out.returncode} {out.stderr!r}")
    print("phase 4: --sleep 3000000000 refused")


def phase_burst(args, deadline):
    cmd = [args.program, "--burst", "100"] + (["--backend", args.backend] if args.backend else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        line = b""
        while b"burst of" not in line:
            ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
            check(ready, "pollchild --burst did not report")
            line = proc.stdout.readline()
            check(line, "pollchild --burst ended without a report")
        check(b"burst of 100 exits: 100 reported" in line, f"burst: {line!r}")
        # It waits for EOF on stdin: whatever it left unreaped is still there.
        zombies = [k for k in children(proc.pid) if state(k) == "Z"]
        check(not zombies, f"zombies left: {zombies}")
    finally:
        proc.stdin.close()
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    check(proc.returncode == 0, f"pollchild --burst exited {proc.returncode}")
    print("phase 5: a burst of 100 simultaneous exits: 100 reported, no zombie")


def children(pid):
    kids = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(f) as fh:
            kids += fh.read().split()
    return kids


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--program", required=True)
    ap.add_argument("--backend", default=os.environ.get("ZREAP_BACKEND"))
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    ctx = zmq.Context()
    try:
        phase_generations(args, ctx, deadline)
        phase_sigint(args, deadline)
        phase_multiframe(args, ctx, deadline)
        phase_bad_sleep(args, deadline)
        phase_burst(args, deadline)
    except Failed as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        ctx.term()
    print("pollchild_test: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
