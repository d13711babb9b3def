"""Ray Tune's figures for the workload of examples/bench_tune.rs (run by bench/tune.sh --ray):
200 trials x 10 iterations of a no-op trainable, FIFO and ASHA, 1 CPU per trial,
and the time per result of reporting a 1 MB checkpoint."""

import os
import sys
import tempfile
import time

import ray
from ray import tune
from ray.tune import Checkpoint
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

TRIALS = int(os.environ.get("BENCH_TRIALS", "200"))
ITERS = 10


def noop(config):
    for i in range(ITERS):
        tune.report({"score": config["x"] * (i + 1)})


def with_checkpoint(config):
    blob = os.urandom(1 << 20)
    t0 = time.perf_counter()
    for i in range(config["n"]):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "blob"), "wb") as f:
                f.write(blob)
            tune.report(
                {"score": i, "t": time.perf_counter() - t0},
                checkpoint=Checkpoint.from_directory(d),
            )


def fit(trainable, scheduler, num_samples, space, storage):
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=num_samples, scheduler=scheduler
        ),
        run_config=tune.RunConfig(storage_path=storage, verbose=0),
    )
    t = time.time()
    grid = tuner.fit()
    return time.time() - t, grid


def main():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="ray-bench-tune-")
    space = {"x": tune.uniform(0, 1)}
    for name, sched in [
        ("FIFO", FIFOScheduler()),
        ("ASHA", ASHAScheduler(max_t=ITERS, grace_period=1, reduction_factor=2)),
    ]:
        wall, grid = fit(noop, sched, TRIALS, space, storage)
        results = sum(int(r.metrics.get("training_iteration", 0)) for r in grid)
        print(
            f"ray-tune {name:<5} {TRIALS} trials: {wall:8.2f} s, {results} results, {results / wall:8.1f} results/s",
            flush=True,
        )
    n = 50
    wall, grid = fit(with_checkpoint, FIFOScheduler(), 1, {"n": n, "score": 0}, storage)
    per = grid[0].metrics["t"] / (n - 1)
    print(
        f"ray-tune checkpoint 1 MB + report: {per * 1000:8.3f} ms per result",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
