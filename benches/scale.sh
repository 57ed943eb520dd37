#!/usr/bin/env bash
# Scale: 10,000 concurrent idle SMTP sessions against a release build of srs-relay serve,
# on loopback ports picked at run time. Prints the relay's RSS with 0, 1,000 and 10,000
# sessions open (goal: under 64 MiB at 1,000) and, at each step, how long a new session
# waits for its 220 (median, min and max of PROBES). The idle client is
# examples/idle_sessions.rs (tokio), so that the client is not what is measured.
#
# Needs: python3 (to pick a free port). Installs nothing. Bounded: LIMIT seconds.
# Usage: benches/scale.sh [STEPS] [PROBES]     e.g. benches/scale.sh 0,1000,10000 15
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-0,1000,10000}
PROBES=${2:-15}
LIMIT=${LIMIT:-300}
MAX=${STEPS##*,}

command -v python3 >/dev/null || { echo "missing python3"; exit 1; }

# The relay and the client each hold one descriptor per session, plus some.
want=$((MAX + 1000))
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt "$want" ]; then
  echo "fd limit $(ulimit -n) is below $want (hard limit $(ulimit -Hn)): lower STEPS or raise it"
  exit 1
fi

cargo build --release --quiet --bin srs-relay --example idle_sessions
BIN=$PWD/target/release/srs-relay
CLIENT=$PWD/target/release/examples/idle_sessions
WORK=$(mktemp -d)
RELAY=""
cleanup() { [ -n "$RELAY" ] && kill "$RELAY" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'bench-secret\n' >"$WORK/secrets"
: >"$WORK/aliases"
# All sessions come from 127.0.0.1: the per-IP limit goes up with the total.
cat >"$WORK/relay.toml" <<TOML
[srs]
secrets_file = "secrets"
default_domain = "relay.bench"
[server]
allow_root = true
listen = ["127.0.0.1:$PORT"]
hostname = "relay.bench"
max_connections = $((MAX + 100))
max_connections_per_ip = $((MAX + 100))
command_timeout = "10m"
[spool]
dir = "spool"
[relay]
aliases_file = "aliases"
TOML
RUST_LOG=warn "$BIN" serve --config "$WORK/relay.toml" 2>"$WORK/relay.log" &
RELAY=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

echo "srs-relay (pid $RELAY) on 127.0.0.1:$PORT; steps $STEPS, $PROBES probes each"
timeout "$LIMIT" "$CLIENT" "127.0.0.1:$PORT" --pid "$RELAY" --steps "$STEPS" --probes "$PROBES" \
    --limit-secs "$LIMIT" | tee "$WORK/out"
python3 - "$WORK/out" <<'PY'
import sys
print(f"{'sessions':>9} {'RSS MiB':>8} {'220 median ms':>14} {'min':>6} {'max':>6}")
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split())
    print(f"{int(f['sessions']):>9,} {int(f['rss_kib'])/1024:>8.1f} {float(f['greet_ms_median']):>14.2f}"
          f" {float(f['greet_ms_min']):>6.2f} {float(f['greet_ms_max']):>6.2f}")
PY
if grep -qiE 'error|panic' "$WORK/relay.log"; then
  echo "relay log:"; cat "$WORK/relay.log"; exit 1
fi
