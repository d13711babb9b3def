#!/usr/bin/env bash
# Python Tune's overhead beside Ray Tune's, measured in the same run (bench/py_tune.py):
# 200 no-op trials x 10 results (FIFO, ASHA), time per result with a 1 MB checkpoint,
# the driver's RSS after 2,000 trials; and the seed's tune-sample.py end to end (bench/seed_tune.py,
# SEED_RUNS times each, default 3): wall times and the tuner's overhead.
#   bench/tune_py.sh            (sunray and Ray; Ray in a venv of its own, ~3 min per run)
#   bench/tune_py.sh --no-ray   (sunray only)
set -euo pipefail
cd "$(dirname "$0")/.."
V=${SUNRAY_PY_VENV:-$PWD/target/py-venv}
if [ ! -x "$V/bin/maturin" ]; then
  python3 -m venv "$V" && "$V/bin/pip" install -q 'maturin>=1.7,<2' numpy cloudpickle
fi
rm -rf target/wheels
"$V/bin/maturin" build --release --locked -q -m crates/sunray-py/Cargo.toml -o target/wheels
"$V/bin/pip" install -q --force-reinstall --no-deps target/wheels/sunray-*.whl
echo "== sunray"
"$V/bin/python" bench/py_tune.py sunray
if [ "${1:-}" != "--no-ray" ]; then
  R=${RAY_VENV:-/tmp/sunray-bench-ray}
  [ -x "$R/bin/python" ] && "$R/bin/python" -c 'import ray.tune' 2>/dev/null \
    || { python3 -m venv "$R" && "$R/bin/pip" install -q 'ray[tune]==2.*'; }
  "$R/bin/python" -c 'import torch, torchvision, pandas' 2>/dev/null \
    || "$R/bin/pip" install -q torch torchvision pandas
  echo "== Ray $("$R/bin/python" -c 'import ray; print(ray.__version__)')"
  BENCH_RSS=0 "$R/bin/python" bench/py_tune.py ray
  echo "== Ray, reuse_actors=True"
  RAY_REUSE=1 BENCH_RSS=0 "$R/bin/python" bench/py_tune.py ray
fi
SEED=${SUNRAY_SEED_DIR:-$PWD/../shared/seed}
if [ -f "$SEED/tune-sample.py" ]; then
  "$V/bin/python" -c 'import torch, torchvision, filelock' 2>/dev/null \
    || "$V/bin/pip" install -q torch torchvision filelock pandas
  work=$(mktemp -d)
  for i in $(seq "${SEED_RUNS:-3}"); do
    echo "== seed tune-sample.py, sunray, run $i"
    "$V/bin/python" bench/seed_tune.py sunray "$SEED" "$work/s$i" 2>/dev/null | tail -1
    if [ "${1:-}" != "--no-ray" ]; then
      echo "== seed tune-sample.py, Ray, run $i"
      "$R/bin/python" bench/seed_tune.py ray "$SEED" "$work/r$i" 2>/dev/null | tail -1
    fi
  done
  rm -rf "$work"
fi
