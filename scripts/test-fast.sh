#!/usr/bin/env bash
# The fast tier: the library's tests and the end-to-end tests that need no outside peer
# (no swaks, Postfix, postsrsd, Mail::SRS or Redis; no root), in well under a minute once
# built. The whole suite, with the real peers, the crash campaign and the fuzz targets,
# is scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --lib
# These wait on sockets far more than they compute: more threads than cores.
cargo test --locked \
  --test cli --test smtp_session --test smuggling --test outbound_framing \
  --test probes --test delivery --test faults \
  -- --test-threads=16 \
  --skip delivers_to_postfix_smtp_sink --skip spool_disk_full_end_to_end
