#!/usr/bin/env bash
# Prints sunray-tune's figures; with --ray, Ray Tune's for the same workload on the same
# machine right after (Ray goes into a venv under /tmp, never into the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sunray-examples --example bench_tune
echo "== sunray-tune ($(nproc) cores)"
target/release/examples/bench_tune
if [ "${1:-}" = --ray ]; then
  V=${RAY_VENV:-/tmp/sunray-bench-ray}
  if ! "$V/bin/python" -c 'import ray.tune' 2>/dev/null; then
    python3 -m venv "$V" && "$V/bin/pip" install -q 'ray[tune]==2.*'
  fi
  echo "== Ray Tune $("$V/bin/python" -c 'import ray; print(ray.__version__)') (about 10 minutes)"
  PATH="$V/bin:$PATH" "$V/bin/python" bench/ray_tune.py 2>/dev/null | grep '^ray-tune'
fi
