#!/usr/bin/env python3
"""Drives examples/jobserver and jobclient as a careless user and an attacker would
(issue 16), with pyzmq.

  jobserver_security_test.py --server PATH --client PATH [--backend NAME] [--timeout S]
                             [--only PHASE,...]

Phases (each with servers of its own):
  groups      a job runs in a process group of its own; cancel ends the whole group (sh and
              the sleep it forked), SIGKILL after the grace reaches members ignoring SIGTERM
  ctrl-c      SIGINT to the server's process group (a terminal's Ctrl-C) reaches the jobs
              only through the server: SIGTERM to their groups, results "cancelled shutdown"
  killed      kill -9 of the server: no process of any job is left (Linux)
  owner       only the client that ran a job may cancel it; " 7", "+7", "7 " are not ids;
              a client-chosen routing id is not served
  disconnect  a client that closes its connection has its running and queued jobs ended
  frame       a frame over --max-frame closes the connection (documented), the server
              serves others; jobclient reports the lost connection
  memory      one request of 200 x 1 MiB frames, and a client that never reads the results
              of 800 jobs of 64 KiB output: the server's VmRSS stays bounded, drops logged
  args        --max-args counts arguments, not the REQ envelope delimiter
  jobclient   --timeout is validated; no server: exit 124; --job-timeout and SIGINT cancel
              the job (its whole group)
  curve       real key files (jobserver --keygen, jobclient keygen): an authorized client
              works, an unauthorized key and a client without CURVE are refused in the
              handshake, a key removed from the file is refused at its next connection,
              ownership follows the key; bad key files stop the server at start-up
  local       a non-loopback endpoint without CURVE is refused; ipc:// files are the
              owner's alone
  allow       --allow-programs: listed programs run, others are refused
Exits 0 when all holds, 1 with the failure otherwise. Bounded by --timeout.
"""
import argparse
import os
import random
import re
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time

from jobserver_lib import (Failed, Server, check, dealer, monitored_dealer, pong_fields,
                           send_if_possible,
                           processes_with, recv, request, rss_kib, run_server, stat_fields,
                           wait_event, wait_until, zmq)

GRACE_MS = 300
MIB = 1024 * 1024


def tag():
    """A sleep duration no other process on the machine uses, to find the job's processes."""
    return f"3141.{random.randrange(10**5, 10**6)}"


def forking_job(t):
    """The issue's job: the shell forks the sleep (it has more to do afterwards)."""
    return [b"sh", b"-c", f"sleep {t}; echo never".encode()]


def base_args(*more):
    return ["--endpoint", "tcp://127.0.0.1:*", "--grace", str(GRACE_MS)] + list(more)


def run_job(sock, argv, deadline):
    msg = request(sock, [b"run"] + argv, deadline)
    check(msg[0] == b"accepted", f"run {argv}: {msg}")
    return msg[1]


def result(sock, deadline, job_id):
    msg = recv(sock, deadline, f"the result of job {job_id.decode()}")
    check(msg[0] == b"result" and msg[1] == job_id, f"expected job {job_id}'s result: {msg[:4]}")
    return msg[2].decode(), msg[3].decode(), msg[4], msg[5], msg[6].decode()


def gone(t, deadline, what):
    wait_until(lambda: not processes_with(t), deadline, f"{what} (processes of sleep {t})")


def asan_env():
    # ASan keeps freed memory in a quarantine (256 MiB by default), which would count as
    # the server's RSS in a sanitized build; a small one keeps the bounds meaningful.
    flags = [os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=8"]
    return dict(os.environ, ASAN_OPTIONS=":".join(f for f in flags if f))


def phase_groups(a, ctx, deadline):
    with Server(a.server, base_args(), a.backend) as srv:
        c = dealer(ctx, srv.endpoint)
        t = tag()
        job = run_job(c, forking_job(t), deadline)
        sleep_pid = wait_until(lambda: processes_with(t, exact=True), deadline,
                               "the job's sleep ran")[0]
        _, ppid, pgrp = stat_fields(sleep_pid)[:3]
        check(pgrp == ppid, f"the job's sleep is in group {pgrp}, its shell {ppid} leads none")
        check(int(pgrp) != os.getpgid(srv.pid), "the job is in the server's process group")
        check(request(c, [b"cancel", job], deadline)[0] == b"ok", "cancel refused")
        got = result(c, deadline, job)
        check(got[0:2] == ("signal", "15") and got[4] == "cancelled", f"cancel ended as {got}")
        gone(t, deadline, "the cancelled job's sleep ended with it")
        # Every member ignores SIGTERM: the grace period's SIGKILL must reach them all.
        t = tag()
        job = run_job(c, [b"sh", b"-c", f'trap "" TERM; sleep {t} & sleep {t}; wait'.encode()],
                      deadline)
        wait_until(lambda: len(processes_with(t, exact=True)) == 2, deadline, "both sleeps ran")
        check(request(c, [b"cancel", job], deadline)[0] == b"ok", "cancel refused")
        got = result(c, deadline, job)
        check(got[0:2] == ("signal", "9"), f"TERM-ignoring job ended as {got}")
        gone(t, deadline, "SIGKILL reached every member of the group")
    print("groups: cancel ended the job's whole process group; SIGKILL after the grace reached "
          "members ignoring SIGTERM")


def phase_ctrl_c(a, ctx, deadline):
    with Server(a.server, base_args(), a.backend, new_session=True) as srv:
        c = dealer(ctx, srv.endpoint)
        t = tag()
        # A job that says which signal reached it: SIGINT straight from the terminal, or
        # the server's SIGTERM, which is what the grace period is for.
        script = (f'trap "echo got-INT; exit 3" INT; trap "echo got-TERM; exit 4" TERM; '
                  f'sleep {t} & wait')
        job = run_job(c, [b"sh", b"-c", script.encode()], deadline)
        wait_until(lambda: processes_with(t, exact=True), deadline, "the job's sleep ran")
        os.killpg(srv.pid, signal.SIGINT)  # what a Ctrl-C at the server's terminal does
        got = result(c, deadline, job)
        check(got[0:3] == ("exit", "4", b"got-TERM\n") and got[4] == "cancelled shutdown",
              f"after a SIGINT to the server's group the job ended as {got}")
        check(srv.wait(deadline) == 0, "the server did not exit 0")
        gone(t, deadline, "the shutdown ended the job's group")
    print("ctrl-c: a SIGINT to the server's group reached the job only as the server's SIGTERM")


def phase_killed(a, ctx, deadline):
    if not sys.platform.startswith("linux"):
        print("killed: skipped, parent_death_signal is Linux-only")
        return
    with Server(a.server, base_args(), a.backend) as srv:
        c = dealer(ctx, srv.endpoint)
        t1, t2 = tag(), tag()
        run_job(c, forking_job(t1), deadline)
        run_job(c, [b"sleep", t2.encode()], deadline)
        wait_until(lambda: processes_with(t1) and processes_with(t2), deadline, "jobs ran")
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait()
        gone(t1, deadline, "a killed server left no process of its forking job")
        gone(t2, deadline, "a killed server left no job")
    print("killed: kill -9 of the server left no process of any job")


def phase_owner(a, ctx, deadline):
    with Server(a.server, base_args(), a.backend) as srv:
        alice, bob = dealer(ctx, srv.endpoint), dealer(ctx, srv.endpoint)
        t = tag()
        job = run_job(alice, [b"sleep", t.encode()], deadline)
        msg = request(bob, [b"cancel", job], deadline)
        check(msg[0] == b"error" and b"not yours" in msg[1], f"another client's cancel: {msg}")
        for bad in [b" " + job, b"+" + job, job + b" ", b"0x" + job, b"-" + job, b""]:
            msg = request(alice, [b"cancel", bad], deadline)
            check(msg[0] == b"error" and b"bad job id" in msg[1], f"cancel {bad!r}: {msg}")
        check(processes_with(t), "a refused cancel ended the job")
        check(request(alice, [b"cancel", job], deadline)[0] == b"ok", "owner's cancel refused")
        check(result(alice, deadline, job)[0:2] == ("signal", "15"), "cancelled job's result")
        named = dealer(ctx, srv.endpoint, ROUTING_ID=b"alice")
        msg = request(named, [b"ping"], deadline)
        check(msg[0] == b"error" and b"ROUTING_ID" in msg[1], f"client-chosen id served: {msg}")
    print("owner: only the submitting client cancels; ' 7', '+7', '7 ' refused; "
          "client-chosen routing ids not served")


def phase_disconnect(a, ctx, deadline):
    with Server(a.server, base_args("--max-jobs", "1"), a.backend) as srv:
        c = dealer(ctx, srv.endpoint)
        t = tag()
        run_job(c, forking_job(t), deadline)
        run_job(c, [b"true"], deadline)  # waits in the queue behind the first
        wait_until(lambda: processes_with(t), deadline, "the job's sleep ran")
        other = dealer(ctx, srv.endpoint)
        dropped_before = pong_fields(other, deadline).get("dropped", 0)
        c.close()
        gone(t, deadline, "the job of a client that disconnected was ended")
        counts = wait_until(
            lambda: (lambda p: p if p["running"] == 0 and p["queued"] == 0 else None)(
                pong_fields(other, deadline)), deadline, "nothing runs or waits")
        check(counts.get("dropped", 0) - dropped_before == 2, f"dropped results: {counts}")
        check("closed; ended its 2 jobs" in srv.log(), "the log does not say what was ended")
    print("disconnect: a client's closed connection ended its running and queued jobs, "
          "and the log says so")


def phase_frame(a, ctx, deadline):
    with Server(a.server, base_args("--max-frame", "65536"), a.backend) as srv:
        c, mon = monitored_dealer(ctx, srv.endpoint, zmq.EVENT_DISCONNECTED)
        c.send_multipart([b"run", b"echo", b"y" * 100000])
        wait_event(mon, deadline, zmq.EVENT_DISCONNECTED, "the server to close the connection")
        other = dealer(ctx, srv.endpoint)
        check(request(other, [b"ping"], deadline)[0] == b"pong", "server unhealthy")
        out = subprocess.run([a.client, "--endpoint", srv.endpoint, "run", "echo", "z" * 100000],
                             capture_output=True, timeout=max(1, deadline - time.monotonic()))
        check(out.returncode == 125 and b"was lost" in out.stderr,
              f"jobclient with an oversized frame: {out.returncode} {out.stderr[-300:]!r}")
    print("frame: a frame over --max-frame closed the connection; jobclient said so (exit 125)")


def phase_memory(a, ctx, deadline):
    with Server(a.server, base_args("--max-frame", "65536"), a.backend, env=asan_env()) as srv:
        other = dealer(ctx, srv.endpoint)
        pong_fields(other, deadline)
        before = rss_kib(srv.pid, "VmHWM")
        c, mon = monitored_dealer(ctx, srv.endpoint, zmq.EVENT_DISCONNECTED)
        big = b"x" * MIB
        c.send_multipart([b"run", b"echo"] + [big] * 200, copy=False)
        # Either the server closes the connection (at the first frame) or it answers after
        # taking in all of it; the memory is measured in both cases.
        while time.monotonic() < deadline:
            if mon.poll(20) or c.poll(0):
                break
        grew = rss_kib(srv.pid, "VmHWM") - before
        check(grew < 32 * 1024, f"one request of 200 x 1 MiB frames grew the server by {grew} KiB")
        check(mon.poll(0), "the connection of an oversized request was not closed")
        check(request(other, [b"ping"], deadline)[0] == b"pong", "server unhealthy")
        print(f"memory: 200 x 1 MiB frames in one request: the server grew {grew} KiB at its peak")
        c.close()
    n = 800
    args = base_args("--output-cap", "65536", "--client-buffer", str(2 * MIB),
                     "--max-queue", str(n), "--quiet")
    with Server(a.server, args, a.backend, env=asan_env()) as srv:
        other = dealer(ctx, srv.endpoint)
        pong_fields(other, deadline)
        before = rss_kib(srv.pid, "VmHWM")
        slow = dealer(ctx, srv.endpoint, RCVHWM=1, RCVBUF=4096)
        for _ in range(n):
            slow.send_multipart([b"run", b"head", b"-c", b"65536", b"/dev/zero"])
        pings = [1]

        def settled():
            pings[0] += 1
            p = pong_fields(other, deadline)
            done = p["requests"] >= n + pings[0] and p["running"] == 0 and p["queued"] == 0
            return p if done else None

        counts = wait_until(settled, deadline, "every request of the slow client was handled")
        grew = rss_kib(srv.pid, "VmHWM") - before
        check(grew < 24 * 1024, f"a client not reading {n} results grew the server by {grew} KiB")
        check(counts.get("dropped", 0) > 0, f"nothing dropped for a client that never reads: {counts}")
        check("the client is not reading its replies" in srv.log(), "drops are not logged")
        print(f"memory: a client that never read {n} results of 64 KiB: the server grew {grew} "
              f"KiB at its peak, {counts['dropped']} replies dropped and logged, {counts['finished']} "
              "jobs run")
        slow.close()


def phase_args(a, ctx, deadline):
    with Server(a.server, base_args("--max-args", "3"), a.backend) as srv:
        for sock_type, argv, want in [(zmq.REQ, [b"echo", b"a", b"b", b"c"], b"accepted"),
                                      (zmq.REQ, [b"echo", b"a", b"b", b"c", b"d"], b"error"),
                                      (zmq.DEALER, [b"echo", b"a", b"b", b"c"], b"accepted"),
                                      (zmq.DEALER, [b"echo", b"a", b"b", b"c", b"d"], b"error")]:
            s = ctx.socket(sock_type)  # a fresh REQ each time: the result is a second reply
            s.linger = 0
            s.connect(srv.endpoint)
            msg = request(s, [b"run"] + argv, deadline)
            check(msg[0] == want, f"{'REQ' if sock_type == zmq.REQ else 'DEALER'} run with "
                                  f"{len(argv) - 1} arguments: {msg}")
            if want == b"error":
                check(b"more than 3 arguments" in msg[1], f"{msg}")
            s.close()
    print("args: --max-args 3 takes 3 arguments from REQ and DEALER clients alike, refuses 4")


def run_client(a, args, deadline):
    return subprocess.run([a.client] + args, capture_output=True, text=True,
                          timeout=max(1, deadline - time.monotonic()))


def phase_jobclient(a, ctx, deadline, tmpdir):
    for bad in ["abc", "-5", "0", "", "10x"]:
        out = run_client(a, ["--timeout", bad, "ping"], deadline)
        check(out.returncode == 2 and "bad value for --timeout" in out.stderr,
              f"--timeout {bad!r}: exit {out.returncode} {out.stderr[:200]!r}")
    t0 = time.monotonic()
    out = run_client(a, ["--endpoint", f"ipc://{tmpdir}/nobody", "--timeout", "300", "ping"],
                     deadline)
    check(out.returncode == 124 and "no reply" in out.stderr,
          f"no server: exit {out.returncode} {out.stderr!r}")
    check(time.monotonic() - t0 < 10, "jobclient waited far past --timeout")
    with Server(a.server, base_args(), a.backend) as srv:
        t = tag()
        out = run_client(a, ["--endpoint", srv.endpoint, "--job-timeout", "300", "run", "sh", "-c",
                             f"sleep {t}; echo never"], deadline)
        check(out.returncode == 124 and "cancelling job" in out.stderr and
              "killed by signal 15" in out.stdout, f"--job-timeout: {out}")
        gone(t, deadline, "--job-timeout ended the job's group")
        t = tag()
        p = subprocess.Popen([a.client, "--endpoint", srv.endpoint, "run", "sh", "-c",
                              f"sleep {t}; echo never"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([p.stdout], [], [], max(0.1, deadline - time.monotonic()))
        line = p.stdout.readline() if ready else ""
        check(line.endswith("accepted\n"), f"jobclient: {line!r}")
        wait_until(lambda: processes_with(t), deadline, "the job's sleep ran")
        p.send_signal(signal.SIGINT)
        try:
            rest, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            raise Failed("jobclient did not end after SIGINT")
        check(p.returncode == 143 and "killed by signal 15" in rest and "[cancelled]" in rest,
              f"SIGINT: exit {p.returncode} {rest!r} {err!r}")
        gone(t, deadline, "SIGINT to jobclient ended the job's group")
    print("jobclient: bad --timeout refused (exit 2); no server: exit 124 in time; "
          "--job-timeout and SIGINT cancelled the job's whole group")


def read_keys(path):
    keys = {}
    with open(path) as fh:
        for line in fh:
            m = re.match(r'\s*(public|secret)-key\s*=\s*"(.{40})"', line)
            if m:
                keys[m.group(1)] = m.group(2).encode()
    return keys


def phase_curve(a, ctx, deadline, tmpdir):
    d = os.path.join(tmpdir, "keys")
    os.mkdir(d)
    rc, err = run_server(a.server, ["--keygen", f"{d}/server"], deadline)
    check(rc == 0, f"jobserver --keygen: {rc} {err}")
    check(stat.S_IMODE(os.stat(f"{d}/server.key").st_mode) == 0o600, "server.key not 0600")
    lines = {}
    for name in ["alice", "bob", "mallory"]:
        out = run_client(a, ["keygen", f"{d}/{name}"], deadline)
        check(out.returncode == 0, f"jobclient keygen: {out}")
        lines[name] = re.search(r"--curve-clients file: (.*)", out.stdout).group(1)
    clients = f"{d}/clients"
    with open(clients, "w") as fh:
        # alice as jobclient keygen suggests, bob as his .pub file is
        fh.write("# who may run jobs\n" + lines["alice"] + "\n" + open(f"{d}/bob.pub").read())
    server_pub = read_keys(f"{d}/server.pub")["public"]

    # Key files that must stop the server before it starts.
    rc, err = run_server(a.server, base_args("--curve-secret", f"{d}/server.pub",
                                             "--curve-clients", clients), deadline)
    check(rc == 1 and "no secret-key" in err, f"public key as secret: {rc} {err}")
    open_key = f"{d}/open.key"
    with open(open_key, "w") as fh:
        fh.write(open(f"{d}/server.key").read())
    os.chmod(open_key, 0o644)
    rc, err = run_server(a.server, base_args("--curve-secret", open_key,
                                             "--curve-clients", clients), deadline)
    check(rc == 1 and "chmod 600" in err, f"a world-readable secret key: {rc} {err}")

    def curve_dealer(srv, name, events=0):
        keys = read_keys(f"{d}/{name}.key")
        sock, mon = monitored_dealer(ctx, srv.endpoint, events, CURVE_SERVERKEY=server_pub,
                                     CURVE_PUBLICKEY=keys["public"], CURVE_SECRETKEY=keys["secret"])
        return (sock, mon) if events else sock

    args = base_args("--curve-secret", f"{d}/server.key", "--curve-clients", clients)
    with Server(a.server, args, a.backend) as srv:
        alice = curve_dealer(srv, "alice")
        job = run_job(alice, [b"echo", b"over CURVE"], deadline)
        got = result(alice, deadline, job)
        check(got[0:3] == ("exit", "0", b"over CURVE\n"), f"alice's job: {got}")
        # Refused in the handshake: nothing they send reaches the server.
        failed_plain = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                        zmq.EVENT_DISCONNECTED)
        for who, (sock, mon), failed in [
                ("mallory", curve_dealer(srv, "mallory", zmq.EVENT_HANDSHAKE_FAILED_AUTH),
                 zmq.EVENT_HANDSHAKE_FAILED_AUTH),
                ("a client without CURVE", monitored_dealer(ctx, srv.endpoint, failed_plain),
                 failed_plain)]:
            send_if_possible(sock, [b"run", b"sh", b"-c", b"id; cat /etc/shadow"])
            wait_event(mon, deadline, failed, f"the server to refuse {who}")
            check(not sock.poll(200), f"{who} got a reply")
        counts = pong_fields(alice, deadline)
        check(counts["requests"] == 2, f"requests of refused clients reached the server: {counts}")
        # Ownership follows the key: alice's second connection may cancel, bob may not.
        t = tag()
        job = run_job(alice, [b"sleep", t.encode()], deadline)
        bob = curve_dealer(srv, "bob")
        msg = request(bob, [b"cancel", job], deadline)
        check(msg[0] == b"error" and b"not yours" in msg[1], f"bob cancels alice's job: {msg}")
        alice2 = curve_dealer(srv, "alice")
        check(request(alice2, [b"cancel", job], deadline)[0] == b"ok", "alice's 2nd connection")
        check(result(alice, deadline, job)[0:2] == ("signal", "15"), "cancelled job's result")
        # jobclient with key files.
        keyargs = ["--endpoint", srv.endpoint, "--server-key", f"{d}/server.pub"]
        out = run_client(a, keyargs + ["--key", f"{d}/alice.key", "run", "echo", "via jobclient"],
                         deadline)
        check(out.returncode == 0 and "via jobclient" in out.stdout, f"jobclient alice: {out}")
        out = run_client(a, keyargs + ["--key", f"{d}/mallory.key", "ping"], deadline)
        check(out.returncode == 125 and "refused this client's CURVE key" in out.stderr,
              f"jobclient mallory: {out}")
        out = run_client(a, ["--endpoint", srv.endpoint, "ping"], deadline)
        check(out.returncode == 125 and "handshake" in out.stderr, f"jobclient no key: {out}")
        # Revoking bob: his next connection is refused, without a restart.
        with open(clients, "w") as fh:
            fh.write(lines["alice"] + "\n")
        bob2, mon = curve_dealer(srv, "bob", zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        send_if_possible(bob2, [b"ping"])
        wait_event(mon, deadline, zmq.EVENT_HANDSHAKE_FAILED_AUTH, "bob's revoked key refused")
        check("is not authorized" in srv.log(), "refusals are not logged")
    print("curve: authorized key served; unauthorized key and plain client refused in the "
          "handshake; revoked key refused without restart; bad key files stop the server")


def phase_local(a, ctx, deadline, tmpdir):
    for ep in ["tcp://*:0", "tcp://0.0.0.0:0", "tcp://lo:0", "tcp://localhost:0",
               "tcp://127.0.0.1.example:0", "ws://127.0.0.1:0"]:
        rc, err = run_server(a.server, ["--endpoint", ep], deadline)
        check(rc == 2 and "refusing to bind" in err, f"{ep} without CURVE: {rc} {err[:200]}")
    for ep in ["tcp://127.0.0.2:*"]:
        with Server(a.server, ["--endpoint", ep], a.backend) as srv:
            c = dealer(ctx, srv.endpoint)
            check(request(c, [b"ping"], deadline)[0] == b"pong", f"{ep}: no pong")
    path = os.path.join(tmpdir, "js.sock")
    with Server(a.server, ["--endpoint", f"ipc://{path}"], a.backend) as srv:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check(mode & 0o077 == 0, f"ipc socket file mode {mode:o}, other users could connect")
    print("local: non-loopback endpoints without CURVE refused; loopback served; "
          "ipc:// socket closed to group and others")


def phase_allow(a, ctx, deadline, tmpdir):
    allow = os.path.join(tmpdir, "allow")
    with open(allow, "w") as fh:
        fh.write("# programs jobs may run\n/bin/echo\n")
    with Server(a.server, base_args("--allow-programs", allow), a.backend) as srv:
        c = dealer(ctx, srv.endpoint)
        for prog in [b"echo", b"/usr/bin/echo"]:
            job = run_job(c, [prog, b"allowed"], deadline)
            check(result(c, deadline, job)[2] == b"allowed\n", f"{prog} did not run")
        for argv in [[b"sh", b"-c", b"id"], [b"cat", b"/etc/shadow"]]:
            msg = request(c, [b"run"] + argv, deadline)
            check(msg[0] == b"error" and b"not allowed" in msg[1], f"{argv}: {msg}")
    with open(allow, "w") as fh:
        fh.write("echo\n")
    rc, err = run_server(a.server, base_args("--allow-programs", allow), deadline)
    check(rc == 1 and "not an absolute path" in err, f"relative allow-list entry: {rc} {err}")
    print("allow: listed programs ran, others were refused, a relative entry stops the server")


PHASES = ["groups", "ctrl-c", "killed", "owner", "disconnect", "frame", "memory", "args",
          "jobclient", "curve", "local", "allow"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--backend", default=os.environ.get("ZREAP_BACKEND"))
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--only", default=",".join(PHASES))
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    ctx = zmq.Context()
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            for name in a.only.split(","):
                check(name in PHASES, f"unknown phase {name}")
                fn = globals()["phase_" + name.replace("-", "_")]
                if fn.__code__.co_argcount == 4:
                    fn(a, ctx, deadline, tmpdir)
                else:
                    fn(a, ctx, deadline)
    except Failed as e:
        print(f"FAILED: {e}")
        return 1
    finally:
        ctx.destroy(linger=0)
    print(f"jobserver_security_test: PASS ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
