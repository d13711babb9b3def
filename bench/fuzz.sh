#!/usr/bin/env bash
# Fuzzes every decoder of a message a head or node accepts (fuzz/fuzz_targets) with
# libFuzzer, SECONDS each (default 60), and prints executions and crashes per target.
# Coverage instrumentation uses stable rustc flags (no sanitizer: the code is safe Rust;
# what is looked for is a panic, an abort or an allocation failure). Crashing inputs are
# kept in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-60}
TARGETS=(hello client_proof driver_to_head node_to_head registration head_to_node worker_to_node binary_chunk)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps these flags off build scripts (as cargo-fuzz does).
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins -q --target "$HOST"
BIN=target/$HOST/release
total=0; crashes=0
printf '%-16s %14s %10s %8s\n' target executions exec/s crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  rc=0
  "$BIN/$t" -max_total_time="$SECS" -print_final_stats=1 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1 || rc=$?
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  c=0; [ "$rc" -ne 0 ] && c=1
  printf '%-16s %14s %10s %8s\n' "$t" "$n" "$((n / SECS))" "$c"
  [ "$c" -ne 0 ] && { echo "  crash in $t:"; tail -20 "$log" | sed 's/^/    /'; }
  total=$((total + n)); crashes=$((crashes + c))
  rm -f "$log"
done
printf '%-16s %14s %10s %8s\n' all "$total" "" "$crashes"
[ "$crashes" -eq 0 ]
