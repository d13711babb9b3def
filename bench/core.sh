#!/usr/bin/env bash
# Prints sunray's core figures; with --ray, Ray's for the same workload on the same
# machine right after (Ray is installed in a venv here, never in the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sunray-cli && cargo build --release -q -p sunray-examples --example bench_core
echo "== sunray $(target/release/sunray --version | cut -d' ' -f2) ($(nproc) cores)"
target/release/examples/bench_core
if [ "${1:-}" = --ray ]; then
  V=${RAY_VENV:-/tmp/sunray-bench-ray}
  if [ ! -x "$V/bin/ray" ]; then
    python3 -m venv "$V" && "$V/bin/pip" install -q 'ray==2.*'
  fi
  echo "== Ray $("$V/bin/python" -c 'import ray; print(ray.__version__)')"
  PATH="$V/bin:$PATH" "$V/bin/python" bench/ray_core.py
fi
