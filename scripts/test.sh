#!/usr/bin/env bash
# The test command. Installs the real peers the tests talk to (never mocks) when they are
# missing, then runs the whole suite. A missing peer is installed, never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
perl -MMail::SRS -e 1 2>/dev/null || missing+=(libmail-srs-perl)

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing test peers: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> cargo test (library, CLI, integration against Mail::SRS, doc-tests)"
cargo test --locked

echo "==> codec alone: no default features (no tokio, rustls or server code)"
cargo test --locked --no-default-features --lib

echo "==> rustdoc without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
