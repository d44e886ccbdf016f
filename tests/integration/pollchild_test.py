#!/usr/bin/env python3
"""Drives examples/pollchild (the article's program) with a pyzmq REQ client.

  pollchild_test.py --program PATH [--backend NAME] [--timeout S]

 1. --fast --generations 6: six children come and go while REQ requests are answered; the
    program ends by itself, exit 0, having reported six terminations and every message.
 2. SIGINT while a child sleeps for a minute: the child is ended and reaped through the
    loop, the program exits 0 at once.
Exits 0 when all holds, 1 otherwise.
"""
import argparse
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
    except Failed as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        ctx.term()
    print("pollchild_test: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
