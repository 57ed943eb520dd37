#!/usr/bin/env bash
# Side by side in one run: Postfix + postsrsd 1.x against srs-relay, each relaying to its
# own smtp-sink with the envelope sender rewritten, loaded by smtp-source, rounds
# alternating A B A B. Prints per side the median messages/s accepted and delivered,
# median and p99 accept-to-delivery time, peak memory, and the ratio srs-relay/Postfix.
# Details in benches/compare-postfix.py.
#
# Needs, from Debian: postfix (postfix, smtp-source, smtp-sink), postsrsd, python3; runs
# as root (Postfix's master starts as root). Installs nothing; loopback ports picked at
# run time, never port 25; everything in a temporary directory (KEEP=1 keeps it), but the
# two sinks' message files, which go to /dev/shm (SINK_BASE=DIR to choose): the sinks
# stand for other machines, and their writes should not share the disk under test.
#
# Usage: benches/compare-postfix.sh [MESSAGES] [SESSIONS] [SIZE_BYTES] [ROUNDS]
#        defaults: 5000 20 4096 3
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in /usr/sbin/postfix /usr/sbin/smtp-source /usr/sbin/smtp-sink; do
  [ -x "$tool" ] || missing+=(postfix)
done
[ -x /usr/sbin/postsrsd ] || missing+=(postsrsd)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
[ "$(id -u)" -eq 0 ] || { echo "run as root: Postfix's master starts as root" >&2; exit 1; }

cargo build --release --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 benches/compare-postfix.py "${1:-5000}" "${2:-20}" "${3:-4096}" "${4:-3}" "$PWD/target/release/srs-relay"
