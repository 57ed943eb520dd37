#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each in turn; prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 0 srs_reverse      a number of executions instead
#   FUZZ_PROFILE=fuzz-ci scripts/fuzz.sh 5                the quick build the CI run uses
#
# Stable Rust only: libfuzzer-sys links libFuzzer, and RUSTFLAGS turn on the same
# SanitizerCoverage instrumentation cargo-fuzz would (no sanitizer, so no nightly). The
# crate is cargo-fuzz's layout, so `cargo fuzz run TARGET -s none` works too where it is
# installed. Seeds (committed) are in fuzz/seeds/TARGET; what the fuzzer learns goes to
# fuzz/corpus/TARGET and a crashing input to fuzz/artifacts/TARGET/ (both ignored by git).
# Reproduce a crash: fuzz/target/<triple>/<profile>/TARGET fuzz/artifacts/TARGET/crash-...
# Exit status 1 when a target crashed, leaked past the RSS limit or hung.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(smtp_session_input srs_reverse spool_envelope socketmap_netstring auth_results)
profile=${FUZZ_PROFILE:-release}

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null; then
  echo "==> installing g++ (libFuzzer is C++)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends g++
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "==> building fuzz targets (profile $profile)"
(cd fuzz && cargo build --locked --profile "$profile" --target "$triple" --bins --quiet)
# Where cargo put them: CARGO_TARGET_DIR if set (a relative one is taken from fuzz/).
target_dir=fuzz/target
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  case $CARGO_TARGET_DIR in
    /*) target_dir=$CARGO_TARGET_DIR ;;
    *) target_dir=fuzz/$CARGO_TARGET_DIR ;;
  esac
fi
bin_dir="$target_dir/$triple/$profile"

status=0
passed=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  log="fuzz/artifacts/$t.log"
  mkdir -p "$corpus" "$artifacts"
  args=(-print_final_stats=1 -timeout=10 -max_len=8192 "-artifact_prefix=$artifacts/")
  [ -f "fuzz/dict/$t.dict" ] && args+=("-dict=fuzz/dict/$t.dict")
  if [ -n "${FUZZ_RUNS:-}" ]; then
    args+=("-runs=$FUZZ_RUNS")
  else
    args+=("-max_total_time=$seconds")
  fi
  # The seeds directory comes second: libFuzzer only ever writes to the first.
  "$bin_dir/$t" "${args[@]}" "$corpus" "fuzz/seeds/$t" >"$log" 2>&1 &
  pid=$!
  if wait "$pid"; then
    result=ok
    passed=$((passed + 1))
  else
    result=CRASH
    status=1
  fi
  # smtp_session_input's scratch spool, named after its process.
  rm -rf "/dev/shm/srs-relay-fuzz-$pid" "${TMPDIR:-/tmp}/srs-relay-fuzz-$pid"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  echo "fuzz $t: $result, ${execs:-?} execs in ${secs:-?} s (${rate:-?} execs/s), corpus $(find "$corpus" -type f | wc -l) inputs"
  if [ "$result" = CRASH ]; then
    grep -v '^#\|^INFO' "$log" | head -40
    echo "  input kept in $artifacts/, full log $log"
  fi
done
# The plain summary line test runners end with.
echo "fuzz: $passed passed, $((${#targets[@]} - passed)) failed"
exit $status
