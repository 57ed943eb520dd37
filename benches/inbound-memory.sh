#!/usr/bin/env bash
# Inbound memory (issue 11, part 2: "one client can make the relay hold gigabytes"): the
# relay's peak RSS while many sessions send large messages at once, on loopback ports
# picked at run time, delivering to Postfix's smtp-sink (relay.smarthost). Cases:
#   a   50 sessions x 35 MB at once
#   a2  the same, each session holding all but the final dot for PAUSE s (the issue's
#       attack: 50 nearly complete messages held at the same moment)
#   b   1,000 sessions x 1 MB at once
# For each: sessions accepted (250 after the dot) / refused, time from the last 354 to
# the last 250 and MB/s over it, time until the spool drained and the sink counted every
# message, the relay's RSS before the load and its peak (VmRSS sampled every 50 ms while
# receiving and while delivering, and the kernel's VmHWM). Goal: peak under 128 MiB.
# Each case runs a fresh relay, sink and spool in a directory on the disk (not a tmpfs:
# the real path), removed afterwards. The client is benches/inbound-memory.py (asyncio,
# one 35 MB body shared by all sessions).
#
# Needs: postfix (smtp-sink), python3. Installs nothing. Bounded: LIMIT seconds per case.
# Usage: [BIN=path/to/srs-relay] [CASES=a,a2,b] [PAUSE=2] [LIMIT=600] [TMPDIR=/var/tmp]
#        [AUTH=on: mail authentication on, each message checked whole]
#        benches/inbound-memory.sh
#   BIN defaults to this checkout's release build (built first). To compare with the
#   code before streaming DATA (commit cbf5afd):
#     git worktree add --detach /tmp/srs-old cbf5afd
#     (cd /tmp/srs-old && CARGO_TARGET_DIR=/tmp/srs-old-target cargo build --release --bin srs-relay)
#     BIN=/tmp/srs-old-target/release/srs-relay benches/inbound-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${CASES:-a,a2,b}
PAUSE=${PAUSE:-2}
LIMIT=${LIMIT:-600}
BIG=${BIG:-35000000}      # octets of DATA per message in a and a2 (max_message_size 35 MiB)
SMALL=${SMALL:-1000000}   # in b

for tool in /usr/sbin/smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install postfix python3)"; exit 1; }
done

# The relay and the client each hold one descriptor per session, the relay a file per
# message being received, plus some.
want=3000
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt "$want" ]; then
  echo "fd limit $(ulimit -n) is below $want (hard limit $(ulimit -Hn))"; exit 1
fi

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin srs-relay
  BIN=$PWD/target/release/srs-relay
fi
[ -x "$BIN" ] || { echo "no binary at $BIN"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/inbound-memory.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
fs=$(stat -f -c %T "$WORK")
[ "$fs" = tmpfs ] && echo "warning: $WORK is on a tmpfs: the spool is in memory, not on disk"
# Case a keeps up to two copies of each message on disk at once (received file + queue file).
need_mb=$((50 * BIG * 2 / 1000000 + 500))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
  echo "$WORK has $avail_mb MB free, needs about $need_mb"; exit 1
fi

echo "binary: $BIN"
echo "spool in $WORK ($fs, $avail_mb MB free); $(nproc) CPUs, client and relay on the same machine"
status=0
: >"$WORK/results"
for c in ${CASES//,/ }; do
  case $c in
    a)  args=(--sessions 50 --size "$BIG") ;;
    a2) args=(--sessions 50 --size "$BIG" --pause "$PAUSE") ;;
    b)  args=(--sessions 1000 --size "$SMALL") ;;
    *)  echo "unknown case $c"; exit 1 ;;
  esac
  [ "${AUTH:-off}" = on ] && args+=(--auth)
  timeout $((LIMIT + 60)) python3 benches/inbound-memory.py --bin "$BIN" --dir "$WORK/$c" \
      --name "$c" --limit "$LIMIT" "${args[@]}" | tee -a "$WORK/results" || status=1
  if grep -qiE 'panic' "$WORK/$c/relay.log" 2>/dev/null; then
    echo "relay log ($c):"; grep -iE 'panic' "$WORK/$c/relay.log" | head; status=1
  fi
  rm -rf "${WORK:?}/$c"
done

python3 - "$WORK/results" <<'PY'
import sys
rows = [dict(kv.split("=", 1) for kv in l.split()) for l in open(sys.argv[1]) if l.startswith("name=")]
mib = lambda k: f"{int(k) / 1024:.1f}"
print()
print(f"{'case':<5} {'sessions x MB':>14} {'pause':>5} {'250':>5} {'refused':>7} {'errors':>6} {'send s':>7}"
      f" {'MB/s':>6} {'drained s':>9} {'left':>4} {'base MiB':>8} {'peak recv':>9} {'peak deliv':>10}"
      f" {'VmHWM MiB':>9} {'threads':>7} {'disk MB':>7}")
for r in rows:
    if "error" in r:
        print(f"{r['name']:<5} {r['error']}"); continue
    print(f"{r['name']:<5} {int(r['sessions']):>6,} x {int(r['size'])/1e6:>5.1f} {float(r['pause']):>5.0f}"
          f" {r['accepted']:>5} {r['refused']:>7} {r['errors']:>6} {r['send_s']:>7} {r['mb_s']:>6}"
          f" {r['drained_s']:>9} {r['left']:>4} {mib(r['baseline_kib']):>8} {mib(r['peak_receive_kib']):>9}"
          f" {mib(r['peak_delivery_kib']):>10} {mib(r['hwm_kib']):>9} {r.get('threads_peak', '?'):>7}"
          f" {r['disk_peak_mb']:>7}")
print("send s: last 354 to last 250, pause excluded; drained s: first connect until the spool held"
      " no message and smtp-sink had counted them all; peaks: VmRSS every 50 ms before / after"
      " the last 250; threads: the relay's, at most; disk MB: peak of the file system's used space"
      " above its start (other writers on the disk count too).")
PY
exit $status
