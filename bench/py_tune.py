"""Python Tune overhead, for sunray or Ray (``python bench/py_tune.py sunray|ray``):
200 trials x 10 results of a no-op trainable with FIFO and with ASHA (1 CPU each, on a
2-CPU local cluster); the time per result with a 1 MB checkpoint (20 trials x 10);
the driver's RSS after 2,000 one-result trials. Prints one JSON object."""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time

which = sys.argv[1]
if which == "sunray":
    import sunray as ray
    from sunray import tune
    from sunray.tune.schedulers import ASHAScheduler
else:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler


def noop(config):
    for i in range(10):
        tune.report({"loss": config["x"] / (i + 1)})


def one(config):
    tune.report({"loss": config["x"]})


def with_checkpoint(config):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "w.bin"), "wb") as f:
        f.write(os.urandom(2**20))
    for i in range(10):
        tune.report(
            {"loss": config["x"] / (i + 1)},
            checkpoint=tune.Checkpoint.from_directory(d),
        )


def fit(fn, n, scheduler=None, storage=None):
    kw = (
        {"reuse_actors": True} if which == "ray" and os.environ.get("RAY_REUSE") else {}
    )
    t = time.perf_counter()
    tune.Tuner(
        fn,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=n, scheduler=scheduler, **kw
        ),
        run_config=tune.RunConfig(
            storage_path=storage or tempfile.mkdtemp(), verbose=0
        ),
    ).fit()
    return time.perf_counter() - t


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


ray.init(num_cpus=2)
out = {}
trials = int(os.environ.get("BENCH_TRIALS", "200"))
out["fifo_s"] = fit(noop, trials)
out["asha_s"] = fit(
    noop, trials, ASHAScheduler(max_t=10, grace_period=1, reduction_factor=2)
)
out["trials"] = trials
ck = fit(with_checkpoint, 20)
base = fit(noop, 20)
out["checkpoint_ms_per_result"] = max(ck - base, 0) / 200 * 1000
if os.environ.get("BENCH_RSS", "1") == "1":
    fit(one, 200)
    before = rss_mb()
    fit(one, 2000)
    out["rss_before_mb"] = before
    out["rss_after_2000_mb"] = rss_mb()
print(json.dumps(out))
