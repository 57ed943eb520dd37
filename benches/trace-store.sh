#!/usr/bin/env bash
# The trace store at scale: fills an SQLite trace with MESSAGES messages (as the relay
# records them), then times the searches of `srs-relay trace` over it. See
# examples/trace_scale.rs for the data and the searches.
# Usage: benches/trace-store.sh [MESSAGES]   (default 1000000; needs ~1.2 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-1000000}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --example trace_scale
target/release/examples/trace_scale --messages "$MESSAGES" --store "$WORK/trace.sqlite"
