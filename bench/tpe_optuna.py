"""Optuna's TPE on the functions of examples/bench_tpe.rs, driven through ask/tell the
same way (`parallel` asks outstanding, the oldest told first); one JSON line per
(function, sampler, seed), as bench_tpe prints. Run by bench/tpe.sh."""

import argparse
import json
import math
import time
from collections import deque

import numpy as np
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

A6 = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
]
P6 = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
]
ALPHA6 = [1.0, 1.2, 3.0, 3.2]


def box(n, lo, hi):
    return lambda t: [t.suggest_float(f"x{i}", lo, hi) for i in range(n)]


def branin(x):
    x1, x2 = x
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(x):
    return -sum(
        ALPHA6[i] * math.exp(-sum(A6[i][j] * (x[j] - P6[i][j]) ** 2 for j in range(6)))
        for i in range(4)
    )


def rosenbrock(x):
    return sum(
        100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1)
    )


def ackley(x):
    n = len(x)
    s1 = sum(v * v for v in x) / n
    s2 = sum(math.cos(2 * math.pi * v) for v in x) / n
    return -20 * math.exp(-0.2 * math.sqrt(s1)) - math.exp(s2) + 20 + math.e


def mixed_params(t):
    return (
        t.suggest_float("lr", 1e-5, 1.0, log=True),
        t.suggest_int("n", 1, 100),
        t.suggest_categorical("c", ["a", "b", "c"]),
    )


def mixed(p):
    lr, n, c = p
    return (
        (math.log10(lr) + 3) ** 2 / 4
        + ((n - 42) / 50) ** 2
        + {"a": 0.5, "b": 0.0}.get(c, 1.0)
    )


CURVE_MAX_T = 27


def curve_params(t):
    return (
        t.suggest_float("lr", 1e-4, 1.0, log=True),
        t.suggest_float("momentum", 0.0, 0.99),
        t.suggest_int("width", 16, 512),
        t.suggest_float("dropout", 0.0, 0.8),
    )


def learning_curve(p, t):
    """examples/bench_tpe.rs's synthetic training run (loss at iteration t)."""
    lr, mom, width, drop = p
    floor = (
        0.3 * (math.log10(lr) + 2) ** 2
        + 2 * (mom - 0.9) ** 2
        + 0.05 * (math.log2(width) - 7) ** 2
        + 0.5 * (drop - 0.3) ** 2
    )
    rate = 0.05 + 0.5 * math.sqrt(lr) * (1 + mom)
    return floor + 2 * math.exp(-rate * t)


class Asha:
    """Ray's ASHAScheduler (max_t 27, grace 1, reduction factor 3, one bracket), as
    sunray's scheduler decides in bench_tpe: a trial reaching a rung is stopped when its
    score is below the rung's (1 - 1/rf) percentile; every trial stops at max_t."""

    def __init__(self, max_t=CURVE_MAX_T, grace=1, rf=3):
        n = int(math.log(max_t / grace) / math.log(rf) + 1)
        self.rungs = [(grace * rf**k, {}) for k in reversed(range(n))]
        self.rf, self.max_t = rf, max_t

    def stops(self, trial, t, loss):
        if t >= self.max_t:
            return True
        for milestone, recorded in self.rungs:
            if t < milestone:
                continue
            if trial in recorded:
                return False
            stop = bool(recorded) and -loss < np.percentile(
                list(recorded.values()), (1 - 1 / self.rf) * 100
            )
            recorded[trial] = -loss
            return stop
        return False


PROBLEMS = [
    (
        "branin",
        lambda t: [t.suggest_float("x0", -5, 10), t.suggest_float("x1", 0, 15)],
        branin,
        0.397887357729739,
    ),
    ("hartmann6", box(6, 0, 1), hartmann6, -3.32236801141551),
    ("rosenbrock4", box(4, -5, 10), rosenbrock, 0.0),
    ("ackley5", box(5, -32.768, 32.768), ackley, 0.0),
    ("mixed", mixed_params, mixed, 0.0),
    ("sphere20", box(20, -5, 5), lambda x: sum(v * v for v in x), 0.0),
    ("curve_asha", curve_params, None, 0.0),
]

SAMPLERS = {
    # Optuna 5's default TPE is multivariate.
    "optuna TPE default": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "optuna TPE independent": lambda seed: optuna.samplers.TPESampler(
        seed=seed, multivariate=False
    ),
}


def run(params, f, optimum, sampler, evals, parallel):
    study = optuna.create_study(sampler=sampler, direction="minimize")
    spent, live, curve, best, asked = 0.0, deque(), [], math.inf, 0
    asha = Asha()
    while len(curve) < evals:
        while len(live) < parallel and asked < evals:
            t0 = time.perf_counter()
            trial = study.ask()
            p = params(trial)
            spent += time.perf_counter() - t0
            live.append((trial, p))
            asked += 1
        trial, p = live.popleft()
        if f is None:
            # The learning curve under ASHA: the sampler is told the last loss reached;
            # the regret counts only trials that ran to the end.
            for t in range(1, CURVE_MAX_T + 1):
                last = learning_curve(p, t)
                if asha.stops(trial.number, t, last):
                    break
            if t == CURVE_MAX_T:
                best = min(best, last)
            t0 = time.perf_counter()
            study.tell(trial, last)
            spent += time.perf_counter() - t0
            curve.append(best - optimum)
            continue
        y = f(p)
        t0 = time.perf_counter()
        study.tell(trial, y)
        spent += time.perf_counter() - t0
        best = min(best, y)
        curve.append(best - optimum)
    return curve, spent


def regret_after(curve, k):
    """The best regret after k results (the last one when there were fewer)."""
    return curve[max(1, min(k, len(curve))) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--evals", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument(
        "--functions", default="", help="comma-separated function names (default: all)"
    )
    ap.add_argument(
        "--samplers", default="", help="comma-separated sampler labels (default: all)"
    )
    a = ap.parse_args()
    only = set(filter(None, a.functions.split(",")))
    samplers = set(filter(None, a.samplers.split(",")))
    for name, params, f, optimum in PROBLEMS:
        if only and name not in only:
            continue
        for seed in range(a.seeds):
            for label, make in SAMPLERS.items():
                if samplers and label not in samplers:
                    continue
                curve, spent = run(params, f, optimum, make(seed), a.evals, a.parallel)
                print(
                    json.dumps(
                        {
                            "function": name,
                            "searcher": label,
                            "seed": seed,
                            "parallel": a.parallel,
                            "evals": len(curve),
                            "regret": {
                                str(k): regret_after(curve, k) for k in (25, 50, 100)
                            },
                            "searcher_s_per_100": spent * 100 / len(curve),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
