#!/usr/bin/env bash
# The Python front end's figures beside Ray's, measured in the same run on this machine:
# `import`, `init()` (embedded/local cluster), 10,000 no-op tasks submitted then
# gathered, the mean round trip of 1,000 sequential get(f.remote()), and the seed's
# simple-trainer.py (first and steady rounds, 4 one-second tasks on 2 nodes x 2 CPUs).
#   bench/python.sh [ROUNDS]     (the seed's rounds, default 10 instead of its 60)
# Ray 2.x is installed in a venv of its own (never in the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10}
SEED=${SUNRAY_SEED_DIR:-$PWD/../shared/seed}/simple-trainer.py
[ -f "$SEED" ] || { echo "the seed's simple-trainer.py is not at $SEED (set SUNRAY_SEED_DIR)"; exit 1; }
V=${SUNRAY_PY_VENV:-$PWD/target/py-venv}
if [ ! -x "$V/bin/maturin" ]; then
  python3 -m venv "$V" && "$V/bin/pip" install -q 'maturin>=1.7,<2' pytest numpy cloudpickle
fi
rm -rf target/wheels
"$V/bin/maturin" build --release --locked -q -m crates/sunray-py/Cargo.toml -o target/wheels
"$V/bin/pip" install -q --force-reinstall --no-deps target/wheels/sunray-*.whl
R=${RAY_VENV:-/tmp/sunray-bench-ray}
if [ ! -x "$R/bin/ray" ]; then
  python3 -m venv "$R" && "$R/bin/pip" install -q 'ray==2.*'
fi
out=$(mktemp -d)
"$V/bin/python" bench/py_core.py sunray "$SEED" "$ROUNDS" > "$out/sunray.json"
"$R/bin/python" bench/py_core.py ray "$SEED" "$ROUNDS" > "$out/ray.json"
echo "== sunray $("$V/bin/python" -c 'import importlib.metadata as m; print(m.version("sunray"))') vs Ray $("$R/bin/python" -c 'import ray; print(ray.__version__)') ($(nproc) cores; medians of 5 with ranges; seed: $ROUNDS rounds)"
python3 bench/py_table.py "$out/sunray.json" "$out/ray.json"
