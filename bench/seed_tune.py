"""The seed's tune-sample.py end to end under sunray or Ray (``python bench/seed_tune.py
sunray|ray SEED_DIR WORKDIR``), on the synthetic CIFAR-10 set the tests use, CPU only.

Edits to the seed, the same for both but the import spelling: ``load_data`` reads the
local set; ``gpus_per_trial=0`` (no GPU here); for Ray 2.60, ``Checkpoint`` comes from
``ray.train`` (``ray.air.checkpoint`` is gone); for sunray, ``import sunray as ray``.
Prints one JSON object: the script's wall time, ``fit()``'s wall time, the trials' own
time (the sum of their ``time_total_s``; trials hold 2 CPUs on a 2-CPU machine, so they
run one at a time), the tuner's overhead (``fit()`` minus the trials' time), and what a
fresh Python process takes to import torch and torchvision (each new trial worker pays it
before its trial starts: Ray once per trial, sunray once per worker)."""

from __future__ import annotations

import json
import os
import random
import runpy
import subprocess
import sys
import time
from pathlib import Path

which, seed_dir, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent / "crates/sunray-py/tests")
)
import cifar_synth

work.mkdir(parents=True, exist_ok=True)
os.environ["SUNRAY_TEST_CIFAR"] = str(cifar_synth.write(work / "cifar"))
script = cifar_synth.seed_script(
    seed_dir / "tune-sample.py",
    work / f"tune_sample_{which}.py",
    as_sunray=which == "sunray",
)
src = script.read_text()
last = "main(num_samples=2, max_num_epochs=2, gpus_per_trial=2)"
assert last in src, "the seed's last line changed"
src = src.replace(last, last.replace("gpus_per_trial=2", "gpus_per_trial=0"))
if which == "ray":
    src = src.replace(
        "from ray.air.checkpoint import Checkpoint\n",
        "from ray.train import Checkpoint\n",
    )
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    import ray.tune as tune_module
else:
    import sunray.tune as tune_module
script.write_text(src)

# The same configs for both: the seed draws with numpy's global RNG and the searcher's;
# SUNRAY_TUNE_SEED fixes sunray's, and Ray's BasicVariantGenerator reads the global ones.
os.environ.setdefault("SUNRAY_TUNE_SEED", "19")
random.seed(19)
__import__("numpy").random.seed(19)

fit_times: list[tuple[float, float]] = []
original_fit = tune_module.Tuner.fit


def timed_fit(self):
    t0 = time.perf_counter()
    grid = original_fit(self)
    wall = time.perf_counter() - t0
    trials = sum(float(r.metrics.get("time_total_s", 0.0)) for r in grid)
    fit_times.append((wall, trials))
    return grid


tune_module.Tuner.fit = timed_fit

# What a fresh trial worker pays before its trial starts, whoever schedules it: a
# Python interpreter importing the script's modules (torch, torchvision).
t0 = time.perf_counter()
subprocess.run(
    [sys.executable, "-c", "import torch, torchvision, filelock"], check=True
)
worker_import = time.perf_counter() - t0
os.chdir(work)
t0 = time.perf_counter()
runpy.run_path(str(script), run_name="__main__")
total = time.perf_counter() - t0
((fit_wall, trials_s),) = fit_times
print(
    json.dumps(
        {
            "script_s": total,
            "fit_s": fit_wall,
            "trials_s": trials_s,
            "tuner_overhead_s": fit_wall - trials_s,
            "python_torch_import_s": worker_import,
        }
    )
)
