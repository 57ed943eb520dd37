#!/usr/bin/env python3
"""One case of benches/inbound-memory.sh: a fresh srs-relay and smtp-sink, SESSIONS clients
that each send one SIZE-octet message to an alias at once, the relay's RSS sampled every
50 ms throughout. Prints one `key=value ...` line; exits non-zero if anything went wrong
(a session not answered 250, the spool not drained, the limit passed).

  inbound-memory.py --bin BIN --dir DIR --sessions N --size OCTETS [--pause SECS] [--limit SECS]

Every session connects, sends EHLO, MAIL (with SIZE), RCPT, DATA and waits for its 354;
once all of them have it, they all send their message at once (CRLF lines of 76 octets,
every 50th one dot-stuffed). With --pause, each sends all but the final ".\r\n", waits
for every other session to be there too, then PAUSE seconds, then the dot: all sessions
hold a nearly complete message at the same moment (issue 11's attack). Then the relay
delivers everything to smtp-sink (relay.smarthost); the case ends when the spool's queue
holds no message and the sink counted every accepted one.
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

LINE = 76  # octets per line, CRLF included


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_body(size):
    """About `size` octets of DATA as sent on the wire: headers, then 74-character lines
    with CRLF, every 50th starting with a (stuffed) dot. Does not include the final
    ".\r\n"; ends with CRLF."""
    head = (b"From: Alice <alice@sender.test>\r\nTo: John <john@fwd.test>\r\n"
            b"Subject: inbound memory bench\r\nMessage-ID: <bench@sender.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines = []
    for i in range(100):
        text = bytes(alphabet[(i + j) % len(alphabet)] for j in range(LINE - 2))
        if i % 50 == 0:
            text = b".." + text[2:]  # a line "." + 73 chars, dot-stuffed on the wire
        lines.append(text + b"\r\n")
    block = b"".join(lines)
    n = max(0, size - len(head)) // len(block) + 1
    body = head + block * n
    cut = len(head) + (size - len(head)) // LINE * LINE
    return body[:max(cut, len(head))]


class Gate:
    """All sessions still running arrive before any goes on; a failed session stops
    counting, so a failure never leaves the others waiting."""

    def __init__(self, n):
        self.expected, self.arrived, self.event = n, 0, asyncio.Event()
        self.opened_at = None

    def _check(self):
        if self.arrived >= self.expected and not self.event.is_set():
            self.opened_at = time.monotonic()
            self.event.set()

    async def arrive(self):
        self.arrived += 1
        self._check()
        await self.event.wait()

    def drop(self):
        self.expected -= 1
        self._check()


class Session:
    def __init__(self, loop, sock):
        self.loop, self.sock, self.buf = loop, sock, b""

    async def reply(self):
        """One whole reply (its last line), as text."""
        while True:
            start = 0
            while True:
                end = self.buf.find(b"\r\n", start)
                if end < 0:
                    break
                line = self.buf[start:end]
                if len(line) < 4 or line[3:4] == b" ":
                    self.buf = self.buf[end + 2:]
                    return line.decode("ascii", "replace")
                start = end + 2
            chunk = await self.loop.sock_recv(self.sock, 4096)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    async def command(self, line, want):
        await self.loop.sock_sendall(self.sock, line)
        r = await self.reply()
        if not r.startswith(want):
            raise RuntimeError(f"{line.strip()!r}: {r}")
        return r


async def one(i, port, body, gates, connecting, pause, results):
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    passed = set()
    try:
        async with connecting:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            s = Session(loop, sock)
            r = await s.reply()
        if not r.startswith("220"):
            raise RuntimeError(f"greeting: {r}")
        await s.command(b"EHLO client.bench\r\n", "250")
        await s.command(b"MAIL FROM:<alice@sender.test> SIZE=%d\r\n" % (len(body) + 3), "250")
        await s.command(b"RCPT TO:<john@fwd.test>\r\n", "250")
        await s.command(b"DATA\r\n", "354")
        passed.add("in_data")
        await gates["in_data"].arrive()
        await loop.sock_sendall(sock, memoryview(body))
        if pause:
            passed.add("held")
            await gates["held"].arrive()
            await asyncio.sleep(pause)
        await loop.sock_sendall(sock, b".\r\n")
        r = await s.reply()
        results["accepted" if r.startswith("250") else "refused"] += 1
        if not r.startswith("250"):
            results["replies"].append(r)
        try:
            await s.command(b"QUIT\r\n", "221")
        except Exception:
            pass
    except Exception as e:
        results["errors"] += 1
        results["replies"].append(f"session {i}: {type(e).__name__}: {e}")
    finally:
        for name, g in gates.items():
            if name not in passed and g is not None:
                g.drop()
        sock.close()


async def load(port, n, body, pause):
    results = {"accepted": 0, "refused": 0, "errors": 0, "replies": []}
    gates = {"in_data": Gate(n), "held": Gate(n) if pause else None}
    connecting = asyncio.Semaphore(256)  # the listen backlog is not what is measured
    await asyncio.gather(*(one(i, port, body, gates, connecting, pause, results)
                           for i in range(n)))
    return results, gates


def rss_kib(pid, key="VmRSS"):
    """A field of /proc/PID/status, as a number (kiB for the Vm* ones)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """VmRSS every 50 ms; the peak per phase, and the disk space used above the start."""

    def __init__(self, pid, path):
        super().__init__(daemon=True)
        self.pid, self.path, self.phase = pid, path, "connect"
        self.peaks, self.stop, self.disk0, self.disk_peak = {}, False, self.used(), 0
        self.threads = 0

    def used(self):
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def run(self):
        while not self.stop:
            r = rss_kib(self.pid)
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), r)
            self.disk_peak = max(self.disk_peak, self.used() - self.disk0)
            self.threads = max(self.threads, rss_kib(self.pid, "Threads"))
            time.sleep(0.05)


def queued(spool):
    try:
        return sum(1 for f in os.listdir(os.path.join(spool, "queue")) if f.endswith(".q"))
    except FileNotFoundError:
        return 0


def sink_count(path):
    try:
        data = open(path, "rb").read()
    except OSError:
        return 0
    i = data.rfind(b"mesg=")
    if i < 0:
        return 0
    j = i + 5
    while j < len(data) and data[j:j + 1].isdigit():
        j += 1
    return int(data[i + 5:j] or 0)


def wait_port(port, proc, secs=10):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc, grace=10):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--sessions", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--pause", type=float, default=0)
    ap.add_argument("--limit", type=float, default=600)
    ap.add_argument("--name", default="case")
    ap.add_argument("--auth", action="store_true", help="mail authentication on ([auth] verify)")
    a = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + a.limit
    os.makedirs(a.dir, exist_ok=True)
    os.chmod(a.dir, 0o755)
    relay_port, sink_port = free_port(), free_port()
    with open(os.path.join(a.dir, "secrets"), "w") as f:
        f.write("bench-secret\n")
    with open(os.path.join(a.dir, "aliases"), "w") as f:
        f.write("john@fwd.test: john@home.test\n")
    limit = a.sessions + 100
    with open(os.path.join(a.dir, "relay.toml"), "w") as f:
        f.write(f"""[srs]
secrets_file = "secrets"
default_domain = "fwd.test"
local_domains = ["fwd.test"]
[server]
allow_root = true
listen = ["127.0.0.1:{relay_port}"]
hostname = "relay.bench"
max_message_size = 36700160
max_connections = {limit}
max_connections_per_ip = {limit}
[spool]
dir = "spool"
[relay]
aliases_file = "aliases"
smarthost = "127.0.0.1:{sink_port}"
[queue]
retry_intervals = ["1s"]
max_per_destination = 20
""")
        if a.auth:
            # The checks on: each message whole in memory while it is checked. DNS to a
            # closed loopback port: every lookup fails at once (temperror).
            f.write(f"""[auth]
verify = true
[dns]
servers = ["127.0.0.1:{free_port()}"]
timeout = "200ms"
""")
    body = make_body(a.size)
    sink_out = os.path.join(a.dir, "sink.out")
    sink = relay = None
    ok = True
    try:
        sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "nobody", "-c",
                                 f"127.0.0.1:{sink_port}", "1024"],
                                stdout=open(sink_out, "wb"), stderr=subprocess.STDOUT)
        env = dict(os.environ, RUST_LOG="info")
        relay = subprocess.Popen([a.bin, "serve", "--config", "relay.toml"], cwd=a.dir, env=env,
                                 stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(a.dir, "relay.log"), "wb"))
        if not wait_port(relay_port, relay) or not wait_port(sink_port, sink):
            print(f"name={a.name} error=relay_or_sink_did_not_start", flush=True)
            return 1
        time.sleep(0.5)
        baseline = rss_kib(relay.pid)
        sampler = Sampler(relay.pid, a.dir)
        sampler.start()

        t0 = time.monotonic()
        try:
            results, gates = asyncio.run(asyncio.wait_for(
                load(relay_port, a.sessions, body, a.pause), max(1, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            print(f"name={a.name} error=load_timed_out_after_{a.limit:.0f}s", flush=True)
            return 1
        t_done = time.monotonic()
        t_data = gates["in_data"].opened_at or t0
        rss_after_accept = rss_kib(relay.pid)
        sampler.phase = "delivery"

        accepted = results["accepted"]
        while time.monotonic() < deadline:
            if queued(os.path.join(a.dir, "spool")) == 0 and sink_count(sink_out) >= accepted:
                break
            if relay.poll() is not None:
                break
            time.sleep(0.05)
        t_drained = time.monotonic()
        left = queued(os.path.join(a.dir, "spool"))
        delivered = sink_count(sink_out)
        hwm = rss_kib(relay.pid, "VmHWM")
        time.sleep(0.2)
        sampler.stop = True
        sampler.join()
        rss_end = rss_kib(relay.pid)
        alive = relay.poll() is None
    finally:
        stop(relay)
        stop(sink)

    send_secs = t_done - t_data - a.pause
    mb = accepted * len(body) / 1e6
    peaks = sampler.peaks
    receive_peak = max(peaks.get("connect", 0), 0)
    fields = dict(
        name=a.name, sessions=a.sessions, size=len(body) + 3, pause=a.pause,
        accepted=accepted, refused=results["refused"], errors=results["errors"],
        wall_s=f"{t_done - t0:.2f}", send_s=f"{send_secs:.2f}",
        mb_s=f"{mb / send_secs if send_secs > 0 else 0:.1f}",
        drained_s=f"{t_drained - t0:.2f}", left=left, delivered=delivered,
        baseline_kib=baseline, peak_receive_kib=receive_peak,
        peak_delivery_kib=peaks.get("delivery", 0),
        peak_sampled_kib=max(peaks.values() or [0]), hwm_kib=hwm,
        after_accept_kib=rss_after_accept, end_kib=rss_end,
        disk_peak_mb=f"{sampler.disk_peak / 1e6:.0f}", threads_peak=sampler.threads,
        alive=int(alive))
    print(" ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    for r in results["replies"][:5]:
        print(f"  {a.name}: {r}", file=sys.stderr)
    if results["refused"] or results["errors"] or left or delivered < accepted or not alive:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
