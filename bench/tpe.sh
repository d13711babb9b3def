#!/usr/bin/env bash
# Search quality: sunray's random search and TPE against Optuna's TPE (its default, which
# is multivariate in Optuna 5, and the independent one) on the same functions, sequential and with PARALLEL (default
# 8) suggestions outstanding. Optuna goes into a venv under /tmp, never into the tests.
# Usage: bench/tpe.sh [SEEDS [EVALS]]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-20}; EVALS=${2:-100}; PARALLEL=${PARALLEL:-8}
cargo build --release -q -p sunray-examples --example bench_tpe
V=${OPTUNA_VENV:-/tmp/sunray-bench-optuna}
[ -x "$V/bin/python" ] || { python3 -m venv "$V" && "$V/bin/pip" install -q optuna; }
out=$(mktemp)
for par in 1 "$PARALLEL"; do
  target/release/examples/bench_tpe --seeds "$SEEDS" --evals "$EVALS" --parallel "$par" >>"$out"
  "$V/bin/python" bench/tpe_optuna.py --seeds "$SEEDS" --evals "$EVALS" --parallel "$par" >>"$out"
done
echo "median regret [IQR] over $SEEDS seeds; optuna $("$V/bin/python" -c 'import optuna; print(optuna.__version__)')"
echo "| parallel | function | searcher | after 25 | after 50 | after $EVALS | searcher time / 100 | seeds |"
echo "|---|---|---|---|---|---|---|---|"
python3 bench/tpe_table.py <"$out"
rm -f "$out"
