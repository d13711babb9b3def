#!/usr/bin/env bash
# Runs every test: the Rust workspace's (unit tests of the pure cores, integration tests
# that start real sunray processes on loopback addresses 127.0.0.1-3, and the Slurm
# tests, which bring up a 3-node Slurm lab in network namespaces as root, installing
# slurm-wlm and munge when missing), then the Python front end's: the wheel is built
# with maturin, installed into a venv (made here when missing: maturin, pytest, numpy,
# cloudpickle, and for the Tune tests pandas, optuna, torch and torchvision, for the
# dashboard's browser test selenium, from PyPI) and tested with pytest (the browser test
# also needs Debian's chromium and chromium-driver, which .ci/run installs). The lab is
# torn down at the end.
set -euo pipefail
cd "$(dirname "$0")"
trap 'bash crates/sunray-it/slurm-lab/lab.sh down >/dev/null 2>&1 || true' EXIT
cargo test --workspace --locked "$@"

echo "== Python: build the wheel, install it, pytest"
V=${SUNRAY_PY_VENV:-$PWD/target/py-venv}
if [ ! -x "$V/bin/maturin" ] || [ ! -x "$V/bin/pytest" ] \
  || ! "$V/bin/python" -c 'import torch, torchvision, optuna, pandas, filelock, selenium' 2>/dev/null; then
  [ -x "$V/bin/python" ] || python3 -m venv "$V"
  "$V/bin/pip" install -q 'maturin>=1.7,<2' pytest numpy cloudpickle pandas optuna filelock torch torchvision selenium
fi
rm -rf target/wheels
"$V/bin/maturin" build --release --locked -q -m crates/sunray-py/Cargo.toml -o target/wheels
"$V/bin/pip" install -q --force-reinstall --no-deps target/wheels/sunray-*.whl
# The Rust example shares a cluster with a Python driver in one test.
SUNRAY_RUST_SIMPLE_TRAINER="$PWD/target/debug/examples/simple_trainer" \
  "$V/bin/python" -m pytest -q -p no:cacheprovider crates/sunray-py/tests
