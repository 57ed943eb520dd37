#!/usr/bin/env python3
"""Side by side, in one run: Postfix + postsrsd 1.x against srs-relay, relaying mail with
the sender rewritten, each to its own Postfix smtp-sink, loaded by Postfix's smtp-source.

Run through benches/compare-postfix.sh (which builds srs-relay and checks the tools).

  A: a private Postfix instance (own config, queue and data directories, loopback ports
     only) relaying everything to smtp-sink, with postsrsd rewriting the envelope sender
     through sender_canonical_maps = tcp:...  (and recipient_canonical_maps for bounces).
  B: srs-relay relaying to smtp-sink (trusted network, classic SRS form, same secret).
     With AUTH=on, srs-relay also checks every message on arrival (SPF, DKIM, ARC, DMARC
     for sender.bench, whose SPF and DMARC records a dnsmasq on a loopback port serves as
     the authoritative server of `bench`: 300 s TTLs, an SOA on NXDOMAIN, as real zones)
     and seals it with ARC (an Ed25519 key from `srs-relay arc-keygen`); Postfix does
     neither. smtp-source's messages carry no DKIM signature: no RSA verification is
     counted (see README for its cost).

Same durability: Postfix fsyncs every queue file before its 250; srs-relay fsyncs the
message, its envelope and the directory before its 250. Rounds alternate A B A B; each
round sends MESSAGES x SIZE over SESSIONS sessions, waits until the sink has them all,
checks every one arrived with an SRS sender, and measures:

  * accepted/s: MESSAGES / time smtp-source took (every 250 received);
  * delivered/s: MESSAGES / time until the sink had the last one;
  * accept-to-delivery latency, median and p99: Postfix's own `delay=` per message (from
    its log, 10 ms resolution); srs-relay's `received` -> `delivered` log timestamps;
  * CPU per message: user + system time of each side's processes over the round (with
    what Postfix's master collected from the children it reaped), over MESSAGES;
  * peak memory: the sum of PSS (proportional set size, so libraries shared between
    Postfix's processes are counted once) over each side's processes, sampled every
    100 ms: Postfix's master and all its children plus postsrsd; srs-relay's one process.
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

MESSAGES, SESSIONS, SIZE, ROUNDS = (int(a) for a in sys.argv[1:5])
BIN = sys.argv[5]
SECRET = "compare-postfix bench secret"
SRS_DOMAIN = "forward.bench"
SENDER, RCPT = "bob@sender.bench", "someone@dest.bench"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, limit=20):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listening on 127.0.0.1:{port}")


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cpu_seconds(roots):
    """CPU time used by the process trees under `roots`: each live process's own, plus
    what the roots' exited children left in the roots' accounts (cutime, cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, seen, todo = 0, set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        todo.extend(children(p))
    return total / tick


class Sampler(threading.Thread):
    """Peak of the summed PSS of some process trees, every 100 ms."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots, self.peak, self.running = roots, 0, True

    def run(self):
        while self.running:
            pids, todo = set(), list(self.roots())
            while todo:
                p = todo.pop()
                if p not in pids:
                    pids.add(p)
                    todo.extend(children(p))
            self.peak = max(self.peak, sum(pss_kib(p) for p in pids))
            time.sleep(0.1)


# The sinks stand for the next hops, which are other machines in real life: their files go
# to a tmpfs when there is one (SINK_BASE overrides), so that writing them does not
# compete with the queue under test for the same disk. Both sides get the same.
SINK_BASE = os.environ.get("SINK_BASE") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)


def sink(directory, port):
    os.makedirs(directory, mode=0o777, exist_ok=True)
    os.chmod(directory, 0o777)
    return subprocess.Popen(
        ["/usr/sbin/smtp-sink", "-u", "nobody", "-d", f"{directory}/m.", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


class Side:
    name = ""

    def __init__(self, work):
        self.work = work
        self.sink_dir = tempfile.mkdtemp(prefix="sink.", dir=SINK_BASE or work)
        self.sink_port = free_port()
        self.port = free_port()
        self.sink = sink(self.sink_dir, self.sink_port)

    def clear_sink(self):
        for f in os.listdir(self.sink_dir):
            os.unlink(os.path.join(self.sink_dir, f))

    def arrived(self):
        return len(os.listdir(self.sink_dir))

    def check_srs_senders(self):
        bad = 0
        for f in os.listdir(self.sink_dir):
            with open(os.path.join(self.sink_dir, f), "rb") as fh:
                head = fh.read(400)
            m = re.search(rb"X-Mail-Args: <([^>]*)>", head)
            if not m or not m.group(1).upper().startswith(b"SRS0="):
                bad += 1
        return bad

    def run_round(self):
        self.clear_sink()
        mark = self.log_mark()
        cpu0 = cpu_seconds(self.roots())
        t0 = time.time()
        subprocess.run(
            ["/usr/sbin/smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(SIZE),
             "-f", SENDER, "-t", RCPT, f"127.0.0.1:{self.port}"],
            check=True,
        )
        ta = time.time()
        end = ta + 600
        while self.arrived() < MESSAGES and time.time() < end:
            time.sleep(0.02)
        td = time.time()
        cpu = cpu_seconds(self.roots()) - cpu0
        got = self.arrived()
        if got != MESSAGES:
            sys.exit(f"{self.name}: {got} of {MESSAGES} arrived at the sink")
        # The sink creates a message's file before it writes it: the last few may still
        # be empty when the count is reached.
        bad = self.check_srs_senders()
        settle = time.time() + 5
        while bad and time.time() < settle:
            time.sleep(0.2)
            bad = self.check_srs_senders()
        if bad:
            sys.exit(f"{self.name}: {bad} messages arrived without an SRS sender")
        time.sleep(0.5)  # let the last log lines land
        lat = self.latencies(mark)
        return {
            "accepted": MESSAGES / (ta - t0),
            "delivered": MESSAGES / (td - t0),
            "lat_median": statistics.median(lat) if lat else float("nan"),
            "lat_p99": percentile(lat, 99),
            "lat_n": len(lat),
            "cpu_us": cpu / MESSAGES * 1e6,
        }


class Postfix(Side):
    name = "Postfix + postsrsd"

    def __init__(self, work):
        super().__init__(work)
        self.postsrsd, self.etc = None, None

    def start(self, secret_file):
        work = self.work
        fwd, rev = free_port(), free_port()
        self.postsrsd = subprocess.Popen(
            ["/usr/sbin/postsrsd", f"-s{secret_file}", f"-d{SRS_DOMAIN}", "-l127.0.0.1",
             f"-f{fwd}", f"-r{rev}", "-4", "-unobody"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(fwd)
        etc, queue, data = f"{work}/etc", f"{work}/queue", f"{work}/data"
        for d in (etc, queue, data):
            os.makedirs(d)
        shutil.chown(data, "postfix")
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        out = []
        for line in master.splitlines():
            fields = line.split()
            if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                if fields[4] == "y":
                    fields[4] = "n"  # no chroot: the private queue has no copy of /etc
                line = "  ".join(fields)
            out.append(line)
        with open(f"{etc}/master.cf", "w") as f:
            f.write("\n".join(out) + "\n")
        self.maillog = f"{work}/maillog"
        with open(f"{etc}/main.cf", "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench
mydomain = postfix.bench
myorigin = postfix.bench
mydestination =
local_transport = error:no local delivery
relayhost = [127.0.0.1]:{self.sink_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
sender_canonical_maps = tcp:127.0.0.1:{fwd}
sender_canonical_classes = envelope_sender
recipient_canonical_maps = tcp:127.0.0.1:{rev}
recipient_canonical_classes = envelope_recipient,header_recipient
maillog_file_prefixes = {work}
maillog_file = {self.maillog}
smtp_destination_concurrency_limit = {SESSIONS}
default_destination_concurrency_limit = {SESSIONS}
""")
        self.etc = etc
        subprocess.run(["postfix", "-c", etc, "start"], check=True)
        wait_port(self.port)
        with open(f"{queue}/pid/master.pid") as f:
            self.master = int(f.read().split()[0])

    def roots(self):
        return [self.master, self.postsrsd.pid]

    def log_mark(self):
        try:
            return os.path.getsize(self.maillog)
        except OSError:
            return 0

    def latencies(self, mark):
        with open(self.maillog, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return [float(m) for m in re.findall(r"status=sent.*?delay=([0-9.]+)", text)] or \
            [float(m) for m in re.findall(r" delay=([0-9.]+),.*status=sent", text)]

    def stop(self):
        if self.etc:
            subprocess.run(["postfix", "-c", self.etc, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.postsrsd:
            self.postsrsd.terminate()
        self.sink.terminate()


class SrsRelay(Side):
    name = "srs-relay"

    def __init__(self, work):
        super().__init__(work)
        self.proc = None
        self.dns = None
        if os.environ.get("AUTH") == "on":
            self.name = "srs-relay verify+seal"

    def auth_config(self):
        """AUTH=on: an ARC key, a dnsmasq answering for the bench domains, and the keys
        that point the relay at both."""
        if os.environ.get("AUTH") != "on":
            return ""
        work = self.work
        out = subprocess.run(
            [BIN, "arc-keygen", "--algorithm", "ed25519", "--out", f"{work}/arc.key", "--selector", "bench",
             "--domain", SRS_DOMAIN],
            check=True, capture_output=True, text=True,
        ).stdout
        name, text = out.strip().split(". IN TXT ", 1)
        port = free_port()
        records = {
            "sender.bench": "v=spf1 ip4:127.0.0.1 -all",
            "_dmarc.sender.bench": "v=DMARC1; p=reject",
            name: text.strip('"'),
        }
        self.dns = subprocess.Popen(
            ["dnsmasq", f"--port={port}", "--no-daemon", "--no-resolv", "--no-hosts",
             "--conf-file=/dev/null", "--listen-address=127.0.0.1", "--bind-interfaces",
             "--auth-server=ns.bench,127.0.0.1", "--auth-zone=bench", "--auth-ttl=300",
             "--auth-soa=1,hostmaster.bench,1200,180,1209600", "--user=root"]
            + [f"--txt-record={n},{t}" for n, t in records.items()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        return f"""[dns]
servers = ["127.0.0.1:{port}"]
[arc]
key = "arc.key"
selector = "bench"
domain = "{SRS_DOMAIN}"
"""

    def start(self, secret_file):
        work = self.work
        with open(f"{work}/aliases", "w"):
            pass
        with open(f"{work}/relay.toml", "w") as f:
            f.write(f"""[srs]
format = "classic"
secrets_file = "{secret_file}"
default_domain = "{SRS_DOMAIN}"
local_domains = ["{SRS_DOMAIN}"]
[server]
allow_root = true
listen = ["127.0.0.1:{self.port}"]
hostname = "relay.bench"
max_connections = 20000
max_connections_per_ip = 20000
[spool]
dir = "spool"
[relay]
aliases_file = "aliases"
trusted_networks = ["127.0.0.0/8"]
smarthost = "127.0.0.1:{self.sink_port}"
[queue]
retry_intervals = ["1s"]
max_per_destination = {SESSIONS}
{self.auth_config()}""")
        self.log = f"{work}/relay.log"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", f"{work}/relay.toml"],
            env={**os.environ, "RUST_LOG": "info"},
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
        )
        wait_port(self.port)

    def roots(self):
        return [self.proc.pid]

    def log_mark(self):
        return os.path.getsize(self.log)

    def latencies(self, mark):
        with open(self.log, "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        stamp = r"^(\S+Z)\s"
        received, out = {}, []
        for m in re.finditer(stamp + r".*\breceived\b.*?queue_id=(\w+)", text, re.M):
            received[m.group(2)] = m.group(1)
        for m in re.finditer(stamp + r'.*event="delivered" queue_id=(\w+)', text, re.M):
            start = received.get(m.group(2))
            if start:
                t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
                out.append(t(m.group(1)) - t(start))
        return out

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        if self.dns:
            self.dns.terminate()
            self.dns.wait(timeout=10)
        self.sink.terminate()


def main():
    base = tempfile.mkdtemp(prefix="compare-postfix.")
    os.chmod(base, 0o755)
    secret_file = f"{base}/secret"
    with open(secret_file, "w") as f:
        f.write(SECRET + "\n")
    os.chmod(secret_file, 0o644)  # postsrsd reads it after dropping to nobody
    sides = []
    try:
        os.makedirs(f"{base}/postfix")
        os.makedirs(f"{base}/srs-relay")
        for side in (Postfix(f"{base}/postfix"), SrsRelay(f"{base}/srs-relay")):
            sides.append(side)
            side.start(secret_file)
        samplers = [Sampler(s.roots) for s in sides]
        results = {s.name: [] for s in sides}
        print(f"{MESSAGES} messages x {SIZE} B over {SESSIONS} sessions, {ROUNDS} rounds, A B A B ...")
        for r in range(ROUNDS):
            for side, sampler in zip(sides, samplers):
                if not sampler.is_alive():
                    sampler.start()
                res = side.run_round()
                results[side.name].append(res)
                print(f"  round {r + 1} {side.name:20} accepted {res['accepted']:7.0f}/s  "
                      f"delivered {res['delivered']:7.0f}/s  latency median {res['lat_median'] * 1000:6.0f} ms  "
                      f"p99 {res['lat_p99'] * 1000:6.0f} ms  ({res['lat_n']} measured)  "
                      f"CPU {res['cpu_us']:5.0f} us/msg", flush=True)
        for s in samplers:
            s.running = False
        print()
        print(f"{'':20} {'accepted/s':>11} {'delivered/s':>12} {'median ms':>10} {'p99 ms':>8} {'peak PSS MiB':>13} {'CPU us/msg':>11}")
        med = {}
        for side, sampler in zip(sides, samplers):
            rs = results[side.name]
            m = {k: statistics.median(x[k] for x in rs) for k in ("accepted", "delivered", "lat_median", "lat_p99", "cpu_us")}
            med[side.name] = m
            print(f"{side.name:20} {m['accepted']:11.0f} {m['delivered']:12.0f} {m['lat_median'] * 1000:10.0f} "
                  f"{m['lat_p99'] * 1000:8.0f} {sampler.peak / 1024:13.1f} {m['cpu_us']:11.0f}")
        relay = sides[1]
        if relay.dns:
            with open(relay.log, errors="replace") as f:
                costs = [int(m) for m in re.findall(r"\bauth_us=(\d+)", f.read())]
            if costs:
                print(f"srs-relay verify+seal per message (auth_us in its log): median "
                      f"{statistics.median(costs):.0f} us, p99 {percentile(costs, 99):.0f} us "
                      f"over {len(costs)} messages")
        a, b = med[sides[0].name], med[sides[1].name]
        print(f"{'ratio srs-relay/Postfix':20} {b['accepted'] / a['accepted']:10.2f}x {b['delivered'] / a['delivered']:11.2f}x")
    finally:
        for s in sides:
            try:
                s.stop()
            except Exception as e:  # keep cleaning up
                print(f"stopping {s.name}: {e}", file=sys.stderr)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(base, ignore_errors=True)
            for s in sides:
                shutil.rmtree(s.sink_dir, ignore_errors=True)
        else:
            print(f"kept {base}")


main()
