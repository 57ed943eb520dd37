#!/usr/bin/env bash
# The dashboard over a large trace: fills a trace store with MESSAGES messages as the
# relay records them (examples/trace_scale.rs), starts `serve` (release build) on it with
# the admin listener on a free loopback port, and times what the page asks over HTTP
# with the bearer token (benches/dashboard.py): trace searches of up to 10,000 rows,
# the CSV, the overview; median and slowest of RUNS, end to end.
# Usage: [STORE=sqlite|postgres] [RUNS=7] [TRACE_FILE=path] [BINS="..."] [ROUNDS=1]
#        benches/dashboard.sh [MESSAGES]
#   MESSAGES default 1000000 (~1.1 GB of disk for SQLite, ~1.6 GB for PostgreSQL; the
#   fill takes 1-3 minutes). TRACE_FILE (SQLite): keep the filled file there and, if it
#   exists, search it as it is instead of filling a new one.
# STORE=postgres starts a private PostgreSQL cluster (Debian's postgresql package) in a
# temporary directory on a free loopback port, as benches/trace-store.sh does.
# Bounded: every request times out after 120 s, all of the timing after DEADLINE (600) s.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-1000000}
STORE=${STORE:-sqlite}
RUNS=${RUNS:-7}
WORK=$(mktemp -d -p "${TMPDIR:-/var/tmp}")
PG_BIN=""
RELAY=""
cleanup() {
  if [ -n "$RELAY" ]; then kill "$RELAY" 2>/dev/null || true; wait "$RELAY" 2>/dev/null || true; fi
  if [ -n "$PG_BIN" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 1" INT TERM
cargo build --release --quiet --bin srs-relay --example trace_scale
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
FILL=$TARGET/release/examples/trace_scale
# BINS="path/to/srs-relay ..." times other builds (an older commit's, say) on the same
# store, one after the other, ROUNDS times (A B A B ...).
BINS=${BINS:-$TARGET/release/srs-relay}
ROUNDS=${ROUNDS:-1}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ "$STORE" = postgres ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_PORT=$(port)
  [ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
  printf 'bench-pw' >"$WORK/pw"; [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pw"
  as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --pwfile "$WORK/pw" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w -t 30 \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_wal_size=256MB" start >/dev/null
  as_pg "$PG_BIN/psql" -h "$WORK" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE trace" postgres
  TRACE_STORE="postgres://postgres:bench-pw@127.0.0.1:$PG_PORT/trace"
else
  TRACE_STORE=${TRACE_FILE:-$WORK/trace.sqlite}
fi
if [ "$STORE" = sqlite ] && [ -e "$TRACE_STORE" ]; then
  echo "store: $TRACE_STORE as it is ($(du -sh "$TRACE_STORE" | cut -f1))"
else
  "$FILL" --messages "$MESSAGES" --store "$TRACE_STORE" --repeat 0
fi
# What autovacuum would have done by now: the planner's statistics, the visibility map.
if [ "$STORE" = postgres ]; then
  as_pg "$PG_BIN/psql" -h "$WORK" -p "$PG_PORT" -U postgres -qc "VACUUM ANALYZE trace_events" -c CHECKPOINT trace
fi

ADMIN_PORT=$(port)
cat >"$WORK/relay.toml" <<TOML
[srs]
secrets_file = "secrets"
default_domain = "relay.bench"
[server]
allow_root = true
listen = ["127.0.0.1:$(port)"]
hostname = "relay.bench"
[spool]
dir = "spool"
[relay]
aliases_file = "aliases"
smarthost = "127.0.0.1:$(port)"
[trace]
store = "$TRACE_STORE"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
TOML
printf 'bench-secret\n' >"$WORK/secrets"
: >"$WORK/aliases"
for round in $(seq "$ROUNDS"); do
  for bin in $BINS; do
    RUST_LOG=warn "$bin" serve --config "$WORK/relay.toml" 2>"$WORK/relay.log" &
    RELAY=$!
    for _ in $(seq 300); do
      python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$ADMIN_PORT/healthz', timeout=1)" 2>/dev/null && break
      kill -0 "$RELAY" 2>/dev/null || { cat "$WORK/relay.log"; exit 1; }
      sleep 0.1
    done
    echo "== $bin: $STORE store, $MESSAGES messages; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 benches/dashboard.py time --port "$ADMIN_PORT" --password-file "$WORK/admin-credentials" \
      --runs "$RUNS" --deadline "${DEADLINE:-600}"
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
    kill "$RELAY"; wait "$RELAY" || true; RELAY=""
  done
done
