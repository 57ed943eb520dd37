#!/usr/bin/env bash
# The trace store at scale: fills a trace with MESSAGES messages (as the relay records
# them), then times the searches of `srs-relay trace` over it. See
# examples/trace_scale.rs for the data and the searches.
# Usage: [STORE=sqlite|postgres] benches/trace-store.sh [MESSAGES]
#   (default 1000000; ~1.2 GB of disk for SQLite, ~1.5 GB for PostgreSQL)
# STORE=postgres starts a private PostgreSQL cluster (Debian's postgresql package) in a
# temporary directory on a free loopback port, as the tests do, and removes it after.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-1000000}
STORE=${STORE:-sqlite}
WORK=$(mktemp -d)
PG_BIN=""
cleanup() {
  if [ -n "$PG_BIN" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release --quiet --example trace_scale

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$STORE" = postgres ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  [ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
  printf 'bench-pw' >"$WORK/pw"; [ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pw"
  as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --pwfile "$WORK/pw" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w -t 30 \
    -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
  as_pg "$PG_BIN/psql" -h "$WORK" -p "$PORT" -U postgres -qc "CREATE DATABASE trace" postgres
  target/release/examples/trace_scale --messages "$MESSAGES" \
    --store "postgres://postgres:bench-pw@127.0.0.1:$PORT/trace"
  bytes=$(as_pg "$PG_BIN/psql" -h "$WORK" -p "$PORT" -U postgres -tAc \
    "SELECT pg_total_relation_size('trace_events')" trace)
  python3 -c "import sys; b=int(sys.argv[1]); print(f'size bytes={b} per_message={b/int(sys.argv[2]):.0f}')" "$bytes" "$MESSAGES"
else
  target/release/examples/trace_scale --messages "$MESSAGES" --store "$WORK/trace.sqlite"
fi
