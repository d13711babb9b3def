"""Python Tune overhead, for sunray or Ray (``python bench/py_tune.py sunray|ray``):
200 trials x 10 results of a no-op trainable with FIFO and with ASHA (1 CPU each, on a
2-CPU local cluster); the time a ``report`` takes inside the trial with a 1 MB checkpoint and without (20 trials
x 10 each; medians);
the driver's RSS after 2,000-trial experiments (BENCH_RSS=0 leaves it out). Prints one
JSON object."""

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


def timed_reports(config):
    """Ten results, each with the same 1 MB checkpoint directory or none; the time each
    ``report`` call takes, as the training loop sees it, appended to config["log"]."""
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "w.bin"), "wb") as f:
        f.write(os.urandom(2**20))
    times = []
    for i in range(10):
        ck = tune.Checkpoint.from_directory(d) if config["checkpoint"] else None
        t = time.perf_counter()
        tune.report({"loss": config["x"] / (i + 1)}, checkpoint=ck)
        times.append(time.perf_counter() - t)
    with open(config["log"], "a") as f:
        f.write(json.dumps(times) + "\n")


def report_ms(checkpoint: bool) -> float:
    """Median time of one report over 20 trials x 10 results, in ms."""
    log = os.path.join(tempfile.mkdtemp(), "report_times.jsonl")
    fit(timed_reports, 20, space={"checkpoint": checkpoint, "log": log})
    with open(log) as f:
        times = sorted(t for line in f for t in json.loads(line))
    os.unlink(log)
    return times[len(times) // 2] * 1000


def fit(fn, n, scheduler=None, storage=None, space=None):
    kw = (
        {"reuse_actors": True} if which == "ray" and os.environ.get("RAY_REUSE") else {}
    )
    t = time.perf_counter()
    tune.Tuner(
        fn,
        param_space={"x": tune.uniform(0, 1), **(space or {})},
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
# BENCH_PARTS picks what runs (default all): overhead, checkpoint, rss.
parts = os.environ.get("BENCH_PARTS", "overhead,checkpoint,rss").split(",")
if "overhead" in parts:
    trials = int(os.environ.get("BENCH_TRIALS", "200"))
    out["fifo_s"] = fit(noop, trials)
    out["asha_s"] = fit(
        noop, trials, ASHAScheduler(max_t=10, grace_period=1, reduction_factor=2)
    )
    out["trials"] = trials
if "checkpoint" in parts:
    with_ck, without = report_ms(True), report_ms(False)
    out["report_ms"] = without
    out["report_with_1mb_checkpoint_ms"] = with_ck
    out["checkpoint_ms_per_result"] = with_ck - without
if "rss" in parts and os.environ.get("BENCH_RSS", "1") == "1":
    # After a 200-trial warm-up, then after each of three 2,000-trial experiments: the
    # first shows one experiment's high-water mark, the next two whether it keeps growing.
    fit(one, 200)
    out["rss_mb_after_200"] = rss_mb()
    out["rss_mb_after_each_2000"] = []
    for _ in range(3):
        fit(one, 2000)
        out["rss_mb_after_each_2000"].append(rss_mb())
print(json.dumps(out))
