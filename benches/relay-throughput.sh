#!/usr/bin/env bash
# Relay throughput: Postfix's smtp-source -> srs-relay -> Postfix's smtp-sink, on loopback
# ports picked at run time. Prints messages/s accepted and delivered, the relay's peak RSS,
# and its RSS with 1,000 idle connections open.
#
# Needs: postfix (for smtp-source, smtp-sink), python3. Installs nothing itself.
# Usage: [BIN=...] [TRACE=on|off] [TRACE_STORE=...] [DASHBOARD=off|tab|busy]
#        benches/relay-throughput.sh [MESSAGES] [SESSIONS] [SIZE_BYTES]
# TRACE (default on, as configured out of the box) switches the message trace;
# TRACE_STORE is its trace.store (default: a new SQLite file in the run's directory).
# DASHBOARD: a client acting like the dashboard open in a browser during the load
# (benches/dashboard.py tab): `tab` reads /api/overview at once and every 30 s, as the
# page does; `busy` the overview and a 1,000-row trace search of the last day every 2 s.
# AUTH=on: every message is checked (SPF, DKIM, ARC, DMARC for sender.bench, answered by a
# dnsmasq on a loopback port) and sealed with an Ed25519 ARC key from `arc-keygen`
# (ARC_ALGORITHM=rsa: an RSA-2048 key).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-5000}
SESSIONS=${2:-20}
SIZE=${3:-4096}
IDLE=${IDLE:-1000}

for tool in /usr/sbin/smtp-source /usr/sbin/smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install postfix python3)"; exit 1; }
done

# BIN=path/to/srs-relay measures another build (an older commit's, say) the same way.
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/srs-relay
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RELAY_PORT=$(port); SINK_PORT=$(port); ADMIN_PORT=$(port)

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
chmod 777 "$WORK"
/usr/sbin/smtp-sink -u nobody -c 127.0.0.1:"$SINK_PORT" 1024 >"$WORK/sink.out" 2>&1 &
PIDS+=($!)

printf 'bench-secret\n' >"$WORK/secrets"
: >"$WORK/aliases"
cat >"$WORK/relay.toml" <<TOML
[srs]
secrets_file = "secrets"
default_domain = "relay.bench"
local_domains = ["relay.bench"]
[server]
allow_root = true
listen = ["127.0.0.1:$RELAY_PORT"]
hostname = "relay.bench"
max_connections_per_ip = 20000
max_connections = 20000
[spool]
dir = "spool"
[relay]
aliases_file = "aliases"
trusted_networks = ["127.0.0.0/8"]
smarthost = "127.0.0.1:$SINK_PORT"
[queue]
retry_intervals = ["1s"]
max_per_destination = 20
[trace]
enabled = $([ "${TRACE:-on}" = off ] && echo false || echo true)
$([ -n "${TRACE_STORE:-}" ] && echo "store = \"$TRACE_STORE\"")
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
TOML
if [ "${AUTH:-off}" = on ]; then
  command -v dnsmasq >/dev/null || { echo "missing dnsmasq (apt-get install dnsmasq)"; exit 1; }
  record=$("$BIN" arc-keygen --algorithm "${ARC_ALGORITHM:-ed25519}" --out "$WORK/arc.key" --selector bench --domain relay.bench)
  DNS_PORT=$(port)
  dnsmasq --port="$DNS_PORT" --no-daemon --no-resolv --no-hosts --conf-file=/dev/null \
    --listen-address=127.0.0.1 --bind-interfaces --auth-server=ns.bench,127.0.0.1 --auth-zone=bench --auth-ttl=300 \
    --auth-soa=1,hostmaster.bench,1200,180,1209600 --user=root \
    "--txt-record=sender.bench,v=spf1 ip4:127.0.0.1 -all" \
    "--txt-record=_dmarc.sender.bench,v=DMARC1; p=reject" \
    "--txt-record=bench._domainkey.relay.bench,$(echo "$record" | sed 's/.* IN TXT "\(.*\)"/\1/; s/" "//g')" \
    >/dev/null 2>&1 &
  PIDS+=($!)
  cat >>"$WORK/relay.toml" <<TOML
[dns]
servers = ["127.0.0.1:$DNS_PORT"]
[arc]
key = "arc.key"
selector = "bench"
TOML
  sleep 0.5
fi
RUST_LOG=warn "$BIN" serve --config "$WORK/relay.toml" 2>"$WORK/relay.log" &
RELAY=$!
PIDS+=($RELAY)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$RELAY_PORT) 2>/dev/null && break; sleep 0.1; done

queued() { find "$WORK/spool/queue" -name '*.q' 2>/dev/null | wc -l; }

DASH=""
case "${DASHBOARD:-off}" in
  off) ;;
  tab|busy)
    for _ in $(seq 100); do [ -s "$WORK/admin-credentials" ] && break; sleep 0.1; done
    every=0; [ "$DASHBOARD" = busy ] && every=2
    python3 benches/dashboard.py tab --port "$ADMIN_PORT" --password-file "$WORK/admin-credentials" \
      --overview-every "$([ "$DASHBOARD" = busy ] && echo 2 || echo 30)" --search-every "$every" \
      >"$WORK/dashboard.out" &
    DASH=$!; PIDS+=($DASH) ;;
  *) echo "DASHBOARD: off, tab or busy"; exit 1 ;;
esac

start=$(date +%s.%N)
/usr/sbin/smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bob@sender.bench -t someone@dest.bench 127.0.0.1:"$RELAY_PORT"
accepted=$(date +%s.%N)
for _ in $(seq 1200); do [ "$(queued)" -eq 0 ] && break; sleep 0.05; done
delivered=$(date +%s.%N)
left=$(queued)
rss_peak=$(awk '/VmHWM/ {print $2}' /proc/$RELAY/status)
# The relay's CPU time so far (utime + stime, clock ticks): start-up, the load, and the
# dashboard's requests if any.
cpu_ticks=$(awk '{print $14 + $15}' /proc/$RELAY/stat)
if [ -n "$DASH" ]; then
  kill -TERM "$DASH"; wait "$DASH" || true
  echo "$DASHBOARD: $(cat "$WORK/dashboard.out")"
fi

# Idle connections: open them, wait for every greeting, read RSS.
rss_idle=$(python3 - "$RELAY_PORT" "$IDLE" "$RELAY" <<'PY'
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port)); socks.append(s)
for s in socks:
    s.settimeout(10); assert s.recv(100).startswith(b"220")
t = time.time(); probe = socket.create_connection(("127.0.0.1", port)); probe.settimeout(10)
assert probe.recv(100).startswith(b"220"); greet_ms = (time.time() - t) * 1000
rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
print(f"{rss} {greet_ms:.1f}")
PY
)

python3 - "$MESSAGES" "$SESSIONS" "$SIZE" "$start" "$accepted" "$delivered" "$left" "$rss_peak" $rss_idle "$IDLE" "$cpu_ticks" "$(getconf CLK_TCK)" <<'PY'
import sys
m, s, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t0, ta, td = map(float, sys.argv[4:7])
left, peak, idle_rss, greet, idle = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9]), float(sys.argv[10]), int(sys.argv[11])
cpu, tick = int(sys.argv[12]), int(sys.argv[13])
print(f"messages: {m} x {size} B over {s} sessions (fsync before every 250)")
print(f"accepted:  {m/(ta-t0):8.0f} msg/s  ({ta-t0:.2f} s)")
print(f"delivered: {(m-left)/(td-t0):8.0f} msg/s  ({td-t0:.2f} s, {left} still queued)")
print(f"relay CPU: {cpu/tick:.2f} s, {cpu/tick/m*1e6:.0f} us per message")
print(f"peak RSS under load: {peak/1024:.1f} MiB")
print(f"RSS with {idle} idle connections: {idle_rss/1024:.1f} MiB; a new session's 220 took {greet:.1f} ms")
PY
