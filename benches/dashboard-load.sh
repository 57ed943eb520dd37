#!/usr/bin/env bash
# Relay throughput with the dashboard open (issue 14): benches/relay-throughput.sh run
# in rounds, each round once per DASHBOARD mode in turn (off, tab, busy: A B C A B C ...),
# with the trace in a store of MESSAGES_IN_STORE messages (examples/trace_scale.rs), so
# that the overview and the searches the client makes read a store of that size. After
# each run the events it added are deleted again, so every run sees the same store.
# Prints each run, then per mode the median accepted and delivered msg/s, the median
# over rounds of the ratio to `off` in the same round, and the relay's CPU time per
# message (the dashboard's requests are served by the relay: they show there first).
# Usage: [ROUNDS=3] [MODES="off tab busy"] [TRACE_FILE=path] [MESSAGES_IN_STORE=1000000]
#        benches/dashboard-load.sh [MESSAGES] [SESSIONS] [SIZE_BYTES]
#   MESSAGES per run (default 30000: ~10-15 s at ~2,500 msg/s). TRACE_FILE: keep the
#   filled SQLite file there (and reuse it if it exists). Needs what relay-throughput.sh
#   needs (postfix's smtp-source and smtp-sink, python3).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-30000}
SESSIONS=${2:-20}
SIZE=${3:-4096}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-off tab busy}
IN_STORE=${MESSAGES_IN_STORE:-1000000}
WORK=$(mktemp -d -p "${TMPDIR:-/var/tmp}")
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin srs-relay --example trace_scale
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
STORE=${TRACE_FILE:-$WORK/trace.sqlite}
if [ -e "$STORE" ]; then
  echo "store: $STORE as it is"
else
  "$TARGET/release/examples/trace_scale" --messages "$IN_STORE" --store "$STORE" --repeat 0
fi
: >"$WORK/runs"
for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    t0=$(date +%s%3N)
    out=$(BIN="$TARGET/release/srs-relay" TRACE_STORE="$STORE" DASHBOARD="$mode" IDLE=0 \
      benches/relay-throughput.sh "$MESSAGES" "$SESSIONS" "$SIZE")
    # Forget what the run added: every run sees the same store.
    python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("DELETE FROM trace_events WHERE time >= ?", (int(sys.argv[2]),)); c.commit()' "$STORE" "$t0"
    acc=$(awk '/^accepted:/ {print $2}' <<<"$out"); del=$(awk '/^delivered:/ {print $2}' <<<"$out")
    cpu=$(awk '/^relay CPU:/ {print $5}' <<<"$out")
    dash=$(grep -E '^(tab|busy):' <<<"$out" || true)
    echo "round $round $mode accepted $acc delivered $del relay_cpu_us_per_msg $cpu load $(cut -d' ' -f1 /proc/loadavg) ${dash#*: }"
    echo "$round $mode $acc $del $cpu" >>"$WORK/runs"
  done
done
python3 - "$WORK/runs" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
modes = list(dict.fromkeys(r[1] for r in runs))
by = {(r[0], r[1]): (float(r[2]), float(r[3]), float(r[4])) for r in runs}
rounds = sorted({r[0] for r in runs}, key=int)
base = modes[0]
for m in modes:
    acc = [by[(r, m)][0] for r in rounds if (r, m) in by]
    dlv = [by[(r, m)][1] for r in rounds if (r, m) in by]
    cpu = [by[(r, m)][2] for r in rounds if (r, m) in by]
    ra = [by[(r, m)][0] / by[(r, base)][0] for r in rounds if (r, m) in by and (r, base) in by]
    rd = [by[(r, m)][1] / by[(r, base)][1] for r in rounds if (r, m) in by and (r, base) in by]
    print(f"{m:<5} accepted median {statistics.median(acc):6.0f} msg/s ({min(acc):.0f}-{max(acc):.0f}), "
          f"delivered {statistics.median(dlv):6.0f} ({min(dlv):.0f}-{max(dlv):.0f}); "
          f"/ {base} per round: accepted {statistics.median(ra):.3f} ({min(ra):.3f}-{max(ra):.3f}), "
          f"delivered {statistics.median(rd):.3f} ({min(rd):.3f}-{max(rd):.3f}); "
          f"relay CPU {statistics.median(cpu):.0f} us/msg ({min(cpu):.0f}-{max(cpu):.0f})")
PY
