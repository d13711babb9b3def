#!/usr/bin/env bash
# The dashboard's figures: an experiment of 10,000 trials (x 10 results, written by
# sunray's Python Tune) loaded through the HTTP API, first and later polls; then
# bench_core's figures without and with a dashboard watching each cluster (asked every
# 500 ms); and the release binary's size with and without the dashboard feature.
#   bench/dashboard.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
V=${SUNRAY_PY_VENV:-$PWD/target/py-venv}
if [ ! -x "$V/bin/maturin" ]; then
  python3 -m venv "$V" && "$V/bin/pip" install -q 'maturin>=1.7,<2' numpy cloudpickle
fi
"$V/bin/maturin" build --release --locked -q -m crates/sunray-py/Cargo.toml -o target/wheels
"$V/bin/pip" install -q --force-reinstall --no-deps target/wheels/sunray-*.whl
cargo build --release -q -p sunray-cli
cargo build --release -q -p sunray-examples --example bench_core
work=$(mktemp -d)
trap 'kill $dash 2>/dev/null || true; rm -rf "$work"' EXIT
"$V/bin/python" - "$work/results" "$N" <<'PY'
import sys, time
import sunray
from sunray import tune
def noop(config):
    for i in range(10):
        tune.report({"loss": config["x"] / (i + 1), "accuracy": 1 - config["x"] / (i + 1)})
sunray.init(num_cpus=2)
t = time.perf_counter()
tune.Tuner(noop, param_space={"x": tune.uniform(0, 1)},
           tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=int(sys.argv[2])),
           run_config=tune.RunConfig(name="big", storage_path=sys.argv[1], verbose=0)).fit()
print(f"wrote {sys.argv[2]} trials x 10 results in {time.perf_counter() - t:.1f} s")
PY
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/token"
chmod 600 "$work/token"
target/release/sunray dashboard --results "$work/results" --port 0 --token-file "$work/token" >"$work/out" &
dash=$!
until grep -q http "$work/out" 2>/dev/null; do sleep 0.1; done
url=$(head -1 "$work/out" | awk '{print $4}')
ask() { curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $(cat "$work/token")" "${url}api/$1"; }
echo "== $N trials: seconds per request (first, then 3 more polls)"
for q in "experiments" "experiment?id=0/big" "curves?id=0/big&metric=loss"; do
  printf '%-32s' "$q"
  for i in 1 2 3 4; do printf ' %s' "$(ask "$q")"; done
  echo
done
kill $dash
echo "== bench_core without a dashboard"
target/release/examples/bench_core
echo "== bench_core with a dashboard watching (every 500 ms)"
SUNRAY_BENCH_DASHBOARD=1 target/release/examples/bench_core
echo "== release binary size"
ls -l target/release/sunray | awk '{printf "with the dashboard:    %.1f MB\n", $5 / 1048576}'
cargo build --release -q -p sunray-cli --no-default-features --target-dir target/no-dashboard
ls -l target/no-dashboard/release/sunray | awk '{printf "without (--no-default-features): %.1f MB\n", $5 / 1048576}'
