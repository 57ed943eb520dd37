#!/usr/bin/env python3
"""Two or more builds of srs-relay side by side on Postfix lookups: lookups/s and server
CPU per lookup, socketmap and tcp_table, forward and reverse, on 1 and 20 connections.

    benches/ab-lookups.py --load target/release/examples/table_load \\
        --rounds 5 --seconds 3 before=/tmp/a/srs-relay after=/tmp/b/srs-relay

Every build runs as a `socketmap` server (classic form, same secret) for the whole run;
for each figure the builds take turns, A B A B ..., so that other load on the machine
falls on all of them alike. The load client is examples/table_load.rs (one request in
flight per connection, as Postfix sends them). CPU per lookup is the server process's
utime + stime (/proc/PID/stat, all its threads) over a round, divided by the round's
lookups. Prints, per figure and build, the median and the range over the rounds, and for
each build after the first the median over the rounds of its ratio to the first build's
figure in the same round (load that changes between rounds cancels out of those).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def wait_listening(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", required=True, help="examples/table_load binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--conns", default="1,20")
    ap.add_argument("--protocols", default="socketmap,tcp_table")
    ap.add_argument("--maps", default="forward,reverse")
    ap.add_argument("--json", help="also write every round's figures to this file")
    ap.add_argument("builds", nargs="+", help="NAME=PATH of an srs-relay binary")
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    servers = {}
    procs = []
    try:
        for build in args.builds:
            name, path = build.split("=", 1)
            sm, fwd, rev = free_port(), free_port(), free_port()
            # A directory each: the sender store is created next to the configuration.
            os.mkdir(f"{work}/{name}")
            with open(f"{work}/{name}/secrets", "w") as f:
                f.write("compare-postsrsd bench secret\n")
            os.chmod(f"{work}/{name}/secrets", 0o600)
            cfg = f"{work}/{name}/srs-relay.toml"
            with open(cfg, "w") as f:
                f.write(
                    f'[srs]\nsecrets_file = "secrets"\nformat = "classic"\n'
                    f'default_domain = "bench.example"\n'
                    f'[socketmap]\nlisten = ["127.0.0.1:{sm}"]\n'
                    f'[tcp_table]\nforward_listen = ["127.0.0.1:{fwd}"]\n'
                    f'reverse_listen = ["127.0.0.1:{rev}"]\n'
                )
            p = subprocess.Popen(
                [path, "socketmap", "--config", cfg],
                env={**os.environ, "RUST_LOG": "warn"},
                stderr=open(f"{work}/{name}/log", "w"),
            )
            procs.append(p)
            for port in (sm, fwd, rev):
                wait_listening(port)
            servers[name] = (p.pid, sm, fwd, rev)

        results = {}
        for protocol in args.protocols.split(","):
            for direction in args.maps.split(","):
                for conns in map(int, args.conns.split(",")):
                    key = (protocol, direction, conns)
                    for _ in range(args.rounds):
                        for name, (pid, sm, fwd, rev) in servers.items():
                            if protocol == "socketmap":
                                target = ["--addr", f"127.0.0.1:{sm}"]
                            else:
                                port = fwd if direction == "forward" else rev
                                target = ["--addr", f"127.0.0.1:{port}",
                                          "--forward-addr", f"127.0.0.1:{fwd}"]
                            cmd = [args.load, "--protocol", protocol, *target,
                                   "--map", direction, "--connections", str(conns),
                                   "--seconds", str(args.seconds)]
                            before = cpu_seconds(pid)
                            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                            after = cpu_seconds(pid)
                            kv = dict(x.split("=") for x in out.split())
                            lookups, rate = int(kv["lookups"]), float(kv["per_second"])
                            if int(kv["errors"]):
                                sys.exit(f"{name} {key}: errors: {out}")
                            results.setdefault(key, {}).setdefault(name, []).append(
                                (rate, (after - before) / lookups * 1e6))
                    line = [f"{protocol:9} {direction:7} {conns:2}"]
                    first = next(iter(results[key].values()))
                    for name, runs in results[key].items():
                        rates = [r for r, _ in runs]
                        cpus = [c for _, c in runs]
                        text = (f"{name}: {statistics.median(rates):6.0f}/s ({min(rates):.0f}-{max(rates):.0f}) "
                                f"{statistics.median(cpus):5.2f} us ({min(cpus):.2f}-{max(cpus):.2f})")
                        if runs is not first:
                            # Against the first build in the same round (A B A B: next to each other).
                            rate_ratio = statistics.median(r / f for (r, _), (f, _) in zip(runs, first))
                            cpu_ratio = statistics.median(c / f for (_, c), (_, f) in zip(runs, first))
                            text += f" [paired: rate x{rate_ratio:.3f}, cpu x{cpu_ratio:.3f}]"
                        line.append(text)
                    print(" | ".join(line), flush=True)
        print("load:", open("/proc/loadavg").read().strip())
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"protocol": p, "map": d, "connections": c, "build": name,
                            "per_second": [r for r, _ in runs], "cpu_us": [u for _, u in runs]}
                           for (p, d, c), builds in results.items() for name, runs in builds.items()], f)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
