"""What the jobserver suites share: starting the server, reading replies, looking at
processes through /proc. Every wait is bounded by a deadline; none sleeps and hopes."""
import glob
import os
import re
import select
import subprocess
import tempfile
import time

try:
    import zmq
except ImportError:
    raise SystemExit("jobserver tests: pyzmq is missing (Debian: apt-get install python3-zmq)")


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


class Server:
    """A running examples/jobserver: proc, endpoint, backend, and its stderr (a file)."""

    def __init__(self, path, args, backend=None, env=None, new_session=False):
        cmd = [path] + list(args)
        if backend:
            cmd += ["--backend", backend]
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err,
                                     env=env, start_new_session=new_session)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if ready else ""
        m = re.match(r"jobserver: listening on (\S+) \(backend (\w+)", line)
        if not m:
            self.stop()
            raise Failed(f"server did not start: {line!r} {self.log()!r}")
        self.endpoint, self.backend = m.group(1), m.group(2)
        check(not backend or self.backend == backend,
              f"server runs backend {self.backend}, asked for {backend}")

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def wait(self, deadline):
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise Failed("the server did not exit in time")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        if exc_type is Failed:
            tail = self.log()[-1500:]
            if tail:
                print("server stderr (tail):\n" + tail)


def run_server(path, args, deadline, backend=None):
    """Runs the server to its end, for start-up errors: (exit status, stderr)."""
    cmd = [path] + list(args) + (["--backend", backend] if backend else [])
    try:
        out = subprocess.run(cmd, capture_output=True,
                             timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise Failed(f"{cmd} did not end")
    return out.returncode, out.stderr.decode(errors="replace")


def recv(sock, deadline, what="a reply"):
    left = deadline - time.monotonic()
    if left <= 0 or not sock.poll(int(left * 1000)):
        raise Failed(f"timed out waiting for {what}")
    return sock.recv_multipart()


def request(sock, frames, deadline):
    """Sends a request and returns the next message (an immediate reply)."""
    sock.send_multipart(frames)
    return recv(sock, deadline, f"the reply to {frames[:2]}")


def wait_until(cond, deadline, what, every=0.02):
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failed(f"timed out waiting until {what}")
        time.sleep(every)


def children_of(pid):
    kids = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(f) as fh:
                kids += fh.read().split()
        except OSError:
            pass
    return kids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return None


def job_children_of(pid):
    """The server's children but its warden, a fork of the server itself (same cmdline)."""
    own = cmdline(pid)
    return [k for k in children_of(pid) if cmdline(k) != own]


def stat_fields(pid):
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def processes_with(tag, exact=False):
    """Pids of the live (not zombie) processes whose command line contains tag, or with
    exact=True, has it as one whole argument."""
    found = []
    needle = tag.encode()
    for d in os.listdir("/proc"):
        if d.isdigit():
            line = cmdline(d)
            fields = stat_fields(d)
            if not line or not fields or fields[0] == "Z":
                continue
            if (needle in line.split(b"\0")) if exact else (needle in line):
                found.append(int(d))
    return found


def rss_kib(pid, field="VmRSS"):
    """The process's resident memory now (VmRSS), or at its highest so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failed(f"no {field} for {pid}")


def dealer(ctx, endpoint, **opts):
    return monitored_dealer(ctx, endpoint, 0, **opts)[0]


def monitored_dealer(ctx, endpoint, events, **opts):
    """A DEALER with options set by name (ROUTING_ID=b"x") and, for events != 0, a monitor
    socket for those events, attached before it connects: (socket, monitor or None)."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    # A DEALER whose only peer was dropped (a refused handshake) blocks a send forever:
    # every send is bounded.
    sock.sndtimeo = 10000
    for name, value in opts.items():
        sock.setsockopt(getattr(zmq, name), value)
    mon = sock.get_monitor_socket(events) if events else None
    sock.connect(endpoint)
    return sock, mon


def send_if_possible(sock, frames):
    """Sends without blocking; a socket with no peer left (refused in its handshake) may have
    nowhere to queue the message, which is fine where the point is that nothing arrives."""
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.Again:
        pass


def wait_event(mon, deadline, wanted, what):
    """Reads monitor events until one of @p wanted; returns it."""
    from zmq.utils.monitor import recv_monitor_message
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not mon.poll(int(left * 1000)):
            raise Failed(f"timed out waiting for {what}")
        ev = recv_monitor_message(mon)
        if ev["event"] & wanted:
            return ev


def pong_fields(sock, deadline):
    """The counters of a ping reply, as a dict of ints."""
    msg = request(sock, [b"ping"], deadline)
    check(msg[0] == b"pong", f"ping answered {msg}")
    return {k: int(v) for k, v in (kv.split("=") for kv in msg[1].decode().split())}
