#!/usr/bin/env bash
# The test command. Installs the real peers the tests talk to (never mocks) when they are
# missing, then runs the whole suite. A missing peer is installed, never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
perl -MMail::SRS -e 1 2>/dev/null || missing+=(libmail-srs-perl)
command -v swaks >/dev/null || missing+=(swaks)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/postfix ] || missing+=(postfix)
[ -x /usr/sbin/postsrsd ] || missing+=(postsrsd)
command -v redis-server >/dev/null || missing+=(redis-server)
# PostgreSQL: the trace store tests run private clusters (initdb in a temporary directory,
# a loopback port picked at run time; as the postgres user when root). Never the system's.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# The disk-full tests mount a small tmpfs in a user+mount namespace (unshare -rm).
command -v unshare >/dev/null || missing+=(util-linux)
# tests/packaging.rs checks the systemd unit with systemd-analyze (no running systemd needed).
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v mount >/dev/null || missing+=(mount)
# tests/dashboard_browser.rs drives Debian's Chromium through chromedriver (WebDriver).
command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
# tests/arc.rs: a real DNS server (dnsmasq on a loopback port, started by the tests) and
# an independent DKIM/ARC implementation (dkimpy, with dnspython and PyNaCl for Ed25519).
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq)
/usr/bin/python3 -c 'import dkim, dns.resolver, nacl' 2>/dev/null || missing+=(python3-dkim python3-dnspython python3-nacl)

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing test peers: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Postfix: its smtp-sink/smtp-source tools, and tests/postfix.rs runs a private instance
  # on loopback ports (as root); the system's own Postfix stays unconfigured and stopped.
  # postsrsd (1.x): tests/postsrsd.rs runs it on loopback ports for the migration test.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> cargo test (library, CLI, relay end to end, bounce path, crash and fault campaigns, queue control and reload, trace in SQLite and PostgreSQL, the dashboard in Chromium, Mail::SRS, postsrsd and Postfix compatibility, doc-tests)"
cargo test --locked

echo "==> codec alone: no default features (no tokio, rustls or server code)"
cargo test --locked --no-default-features --lib

echo "==> rustdoc without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet

echo "==> fuzz targets: build, then a few seconds each (scripts/fuzz.sh runs them longer)"
FUZZ_PROFILE=fuzz-ci scripts/fuzz.sh "${FUZZ_SECONDS:-5}"
