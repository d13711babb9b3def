#!/usr/bin/env bash
# Training images/s of the CIFAR CNN: burn (sunray-cifar) then PyTorch, same machine,
# same batch sizes, all cores; then the ratio. PyTorch goes into a venv under /tmp.
# Extra arguments (e.g. --seconds 10, or --gpu with a cuda build) go to both.
set -euo pipefail
cd "$(dirname "$0")/.."
FEATURES=()
for a in "$@"; do [ "$a" = --gpu ] && FEATURES=(--features cuda); done
cargo build --release -q -p sunray-cifar --example bench_cifar "${FEATURES[@]}"
V=${TORCH_VENV:-/tmp/sunray-bench-torch}
if ! "$V/bin/python" -c 'import torch' 2>/dev/null; then
  python3 -m venv "$V" && "$V/bin/pip" install -q torch
fi
B=$(target/release/examples/bench_cifar "$@")
T=$("$V/bin/python" bench/torch_cifar.py "$@")
echo "$B"
echo "$T"
paste <(echo "$B" | awk '{print $3, $4}') <(echo "$T" | awk '{print $4}') |
  awk '{sub(":", "", $1); printf "ratio batch %4s: %.2f (burn / PyTorch)\n", $1, $2 / $3}'
