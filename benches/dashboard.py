#!/usr/bin/env python3
"""The dashboard's requests against a running `serve`, over HTTP with the bearer token.

  dashboard.py time --port P --password-file F [--runs 7] [--deadline 600]
      times each request the page makes (trace searches of up to 10,000 rows, the CSV,
      the overview): median and slowest of --runs, end to end (connect to last byte).
  dashboard.py tab --port P --password-file F [--overview-every 30] [--search-every 0]
      acts like an open dashboard tab until SIGTERM: the overview at once and every
      --overview-every seconds (what the page does for its alert banner); with
      --search-every S also a 1,000-row trace search of the last day every S seconds.
      On SIGTERM prints one line: requests made, their median and slowest time.

Python 3 standard library only.
"""

import argparse
import http.client
import json
import signal
import statistics
import sys
import time

# What the page asks, named as in benches/README.md. The sample store
# (examples/trace_scale.rs) has 1,000,000 messages over 10 days: 20,000 recipients
# user<N>@d<N % 2000>.home.example (as given user<N>@forward.example), 50,000 senders
# sender<N % 50000>@s<N % 997>.example.org for message N, one in a thousand messages
# still deferred and one in a thousand failed, one in a hundred refused.
REQUESTS = [
    ("last 10 days, everything", "/api/trace?since=10d&limit=10000"),
    ("status deferred", "/api/trace?status=deferred&since=10d&limit=10000"),
    ("status delivered", "/api/trace?status=delivered&since=10d&limit=10000"),
    ("status failed", "/api/trace?status=failed&since=10d&limit=10000"),
    ("status refused", "/api/trace?status=refused&since=10d&limit=10000"),
    ("status deferred, last day", "/api/trace?status=deferred&since=1d&limit=10000"),
    ("recipient *@home.example (none)", "/api/trace?recipient=*%40home.example&since=10d&limit=10000"),
    ("recipient *@d7.home.example", "/api/trace?recipient=*%40d7.home.example&since=10d&limit=10000"),
    ("recipient exact", "/api/trace?recipient=user7%40d7.home.example&since=10d&limit=10000"),
    ("sender exact", "/api/trace?sender=sender49999%40s8.example.org&since=10d&limit=10000"),
    ("sender *@s8.example.org", "/api/trace?sender=*%40s8.example.org&since=10d&limit=10000"),
    ("CSV, last 10 days, everything", "/api/trace.csv?since=10d&limit=10000"),
    ("overview", "/api/overview"),
]


def get(port, token, path, timeout=120):
    """One GET on a new connection: (status, body bytes, seconds to the last byte)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    took = time.perf_counter() - t0
    conn.close()
    return resp.status, body, took


def rows_of(path, body):
    if ".csv" in path:
        return body.count(b"\n") - 1
    doc = json.loads(body)
    return len(doc["rows"]) if "rows" in doc else None


def cmd_time(a, token):
    deadline = time.monotonic() + a.deadline
    print(f"{'request':<34} {'rows':>6} {'bytes':>9} {'median ms':>10} {'slowest ms':>10}  (runs)")
    failed = False
    for name, path in REQUESTS:
        if a.only and a.only not in name:
            continue
        times, rows, size = [], None, 0
        for _ in range(a.runs):
            if time.monotonic() > deadline:
                break
            status, body, took = get(a.port, token, path)
            if status != 200:
                print(f"{name}: HTTP {status}: {body[:200]!r}", file=sys.stderr)
                failed = True
                break
            times.append(took * 1000)
            rows, size = rows_of(path, body), len(body)
        if not times:
            continue
        print(
            f"{name:<34} {'' if rows is None else rows:>6} {size:>9} "
            f"{statistics.median(times):>10.0f} {max(times):>10.0f}  ({len(times)})",
            flush=True,
        )
    if time.monotonic() > deadline:
        print("deadline reached: some runs skipped", file=sys.stderr)
    return 1 if failed else 0


def cmd_tab(a, token):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    tasks = [[a.overview_every, "/api/overview", time.monotonic()]]
    if a.search_every:
        tasks.append([a.search_every, "/api/trace?since=1d&limit=1000", time.monotonic()])
    times, errors = [], 0
    for _ in range(100):  # until the admin listener is up
        try:
            get(a.port, token, "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    while not stop:
        for task in tasks:
            every, path, due = task
            if time.monotonic() >= due:
                try:
                    status, _, took = get(a.port, token, path)
                    times.append(took * 1000)
                    errors += status != 200
                except OSError:
                    errors += 1
                task[2] = max(due + every, time.monotonic() - every / 2)
        wake = min(t[2] for t in tasks)
        time.sleep(max(0.0, min(0.2, wake - time.monotonic())))
    if times:
        print(
            f"dashboard requests={len(times)} errors={errors} "
            f"median_ms={statistics.median(times):.0f} max_ms={max(times):.0f}",
            flush=True,
        )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["time", "tab"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--deadline", type=float, default=600, help="seconds for all of `time`")
    p.add_argument("--only", help="time only the requests whose name contains this")
    p.add_argument("--overview-every", type=float, default=30)
    p.add_argument("--search-every", type=float, default=0)
    a = p.parse_args()
    with open(a.password_file) as f:
        token = f.readline().strip()
    sys.exit(cmd_time(a, token) if a.mode == "time" else cmd_tab(a, token))


if __name__ == "__main__":
    main()
