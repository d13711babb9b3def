#!/usr/bin/env bash
# Where the CPU time goes in the CIFAR CNN's training step: samples grouped by the
# innermost burn-flex operation or sunray-cifar CPU kernel on their call stack (perf with DWARF unwinding; the
# release profile keeps line tables). Usage: bench/profile_cifar.sh [BATCH] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)"; exit 1; }
cargo build --release -q -p sunray-cifar --example bench_cifar
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
perf record -q --call-graph dwarf,16384 -o "$out/perf.data" -- \
  target/release/examples/bench_cifar --batch-sizes "${1:-128}" --seconds "${2:-2}"
perf script -i "$out/perf.data" -F ip,sym 2>/dev/null | awk '
  /^[ \t]*$/ { if (n > 0) { c[op == "" ? "(outside these ops)" : op]++; total++ } op = ""; n = 0; next }
  { n++; if (op == "" && match($0, /burn_flex::(ops::[a-z_0-9]+::[a-z_0-9]+|tensor::[a-z_0-9_]+)|sunray_cifar::cpu::[a-z_0-9]+::[a-z_0-9_]+/)) op = substr($0, RSTART, RLENGTH) }
  END { for (k in c) printf "%5.1f %%  %s\n", 100 * c[k] / total, k }' | sort -rn | head -15
