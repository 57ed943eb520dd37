#!/usr/bin/env bash
# The crash campaign of tests/campaign.rs, longer: KILLS kill -9s of the relay at random
# moments over SECONDS of load (defaults 200 over 600 s; CI runs 12 over 30 s).
# CAMPAIGN_SEED=N repeats the moments of an earlier run (each run prints its seed).
# Usage: scripts/crash-campaign.sh [KILLS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CAMPAIGN_KILLS=${1:-200}
export CAMPAIGN_SECS=${2:-600}
exec cargo test --locked --test campaign -- --nocapture
