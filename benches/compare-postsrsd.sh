#!/usr/bin/env bash
# Side by side: postsrsd 1.x's tcp_table (Debian's postsrsd 1.10) against srs-relay's
# tcp_table and socketmap, on this machine, in one run: lookups per second on one
# connection and on 20 concurrent connections, forward (sender) and reverse (recipient).
#
#   benches/compare-postsrsd.sh                 # best of 3 rounds of 3 s per figure
#   ROUNDS=5 SECONDS_PER_RUN=5 benches/compare-postsrsd.sh
#
# Both servers get the same secret and SRS domain (classic form, so their addresses are
# the same), run on free loopback ports, and are stopped at the end. The load client is
# examples/table_load.rs: one thread per connection, each sending one request and waiting
# for its reply as Postfix does (no pipelining). Rounds alternate between the servers so
# that other load on the machine falls on all of them alike; the best round is kept.
# A ceiling is measured too: examples/table_ceiling.rs answers every request with a
# constant and does nothing else, the most any server can reach with this client here.
#
# Needs postsrsd 1.x (apt-get install postsrsd) and python3 (apt-get install python3);
# installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
DOMAIN=bench.example
POSTSRSD=/usr/sbin/postsrsd

if [ ! -x "$POSTSRSD" ]; then
  echo "postsrsd is not installed: this comparison needs postsrsd 1.x (apt-get install postsrsd)" >&2
  exit 1
fi
PSD_VERSION=$("$POSTSRSD" -v 2>/dev/null || true)
case "$PSD_VERSION" in
  1.*) ;;
  *) echo "$POSTSRSD is version '$PSD_VERSION'; this comparison drives postsrsd 1.x's tcp_table ports" >&2; exit 1 ;;
esac
command -v python3 >/dev/null || { echo "python3 is missing (apt-get install python3)" >&2; exit 1; }

cargo build --release --quiet --bin srs-relay --example table_load --example table_ceiling
BIN=$PWD/target/release/srs-relay
LOAD=$PWD/target/release/examples/table_load
CEILING=$PWD/target/release/examples/table_ceiling

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PSD_FWD=$(port); PSD_REV=$(port); SM=$(port); TT_FWD=$(port); TT_REV=$(port); CEIL=$(port)

# The same secrets file for both (postsrsd's format: one secret per line).
printf 'compare-postsrsd bench secret\n' >"$WORK/secrets"

"$POSTSRSD" -s"$WORK/secrets" -d"$DOMAIN" -f"$PSD_FWD" -r"$PSD_REV" -l127.0.0.1 -4 \
  2>"$WORK/postsrsd.log" &
PIDS+=($!)

cat >"$WORK/srs-relay.toml" <<TOML
[srs]
secrets_file = "secrets"
format = "classic"
default_domain = "$DOMAIN"
[socketmap]
listen = ["127.0.0.1:$SM"]
[tcp_table]
forward_listen = ["127.0.0.1:$TT_FWD"]
reverse_listen = ["127.0.0.1:$TT_REV"]
TOML
RUST_LOG=warn "$BIN" socketmap --config "$WORK/srs-relay.toml" 2>"$WORK/srs-relay.log" &
PIDS+=($!)

"$CEILING" "127.0.0.1:$CEIL" &
PIDS+=($!)

for p in $PSD_FWD $PSD_REV $SM $TT_FWD $TT_REV $CEIL; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null && break; sleep 0.1; done
  (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null || {
    echo "nothing listens on port $p; logs:" >&2
    cat "$WORK/postsrsd.log" "$WORK/srs-relay.log" >&2
    exit 1
  }
done

# rate SIDE MAP CONNS: one measurement, lookups/s.
rate() {
  local side=$1 map=$2 conns=$3 args
  case $side in
    postsrsd) args=(--protocol tcp_table --addr "127.0.0.1:$([ "$map" = forward ] && echo "$PSD_FWD" || echo "$PSD_REV")" --forward-addr "127.0.0.1:$PSD_FWD") ;;
    tcp_table) args=(--protocol tcp_table --addr "127.0.0.1:$([ "$map" = forward ] && echo "$TT_FWD" || echo "$TT_REV")" --forward-addr "127.0.0.1:$TT_FWD") ;;
    socketmap) args=(--protocol socketmap --addr "127.0.0.1:$SM") ;;
    ceiling) args=(--protocol tcp_table --addr "127.0.0.1:$CEIL") ;;
  esac
  "$LOAD" "${args[@]}" --map "$map" --connections "$conns" --seconds "$SECONDS_PER_RUN" |
    sed -n 's/.*per_second=\([0-9]*\).*/\1/p'
}

declare -A BEST
for map in forward reverse; do
  for conns in 1 20; do
    sides=(postsrsd tcp_table socketmap)
    [ "$map" = forward ] && sides+=(ceiling)
    for _ in $(seq "$ROUNDS"); do
      for side in "${sides[@]}"; do
        r=$(rate "$side" "$map" "$conns")
        key="$side/$map/$conns"
        [ "${BEST[$key]:-0}" -ge "$r" ] || BEST[$key]=$r
      done
    done
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo "postsrsd $PSD_VERSION (tcp_table) and srs-relay $("$BIN" --version | cut -d' ' -f2) (tcp_table, socketmap): same secret,"
echo "SRS domain $DOMAIN, classic form; $(nproc) CPUs; lookups/s, best of $ROUNDS rounds of ${SECONDS_PER_RUN} s;"
echo "one request in flight per connection, as Postfix sends them."
echo
printf '%-8s %5s  %10s  %10s %7s  %10s %7s\n' map conns postsrsd tcp_table ratio socketmap ratio
for map in forward reverse; do
  for conns in 1 20; do
    p=${BEST[postsrsd/$map/$conns]}; t=${BEST[tcp_table/$map/$conns]}; s=${BEST[socketmap/$map/$conns]}
    printf '%-8s %5s  %10s  %10s %7s  %10s %7s\n' "$map" "$conns" "$p" "$t" "$(ratio "$t" "$p")" "$s" "$(ratio "$s" "$p")"
  done
done
echo
for conns in 1 20; do
  c=${BEST[ceiling/forward/$conns]}
  echo "ceiling, $conns connection(s): $c lookups/s, $(ratio "$c" "${BEST[postsrsd/forward/$conns]}") postsrsd's forward" \
    "(a server answering a constant line and doing nothing else)"
done
