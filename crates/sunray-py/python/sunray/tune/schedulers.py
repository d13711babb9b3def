"""Ray Tune's trial schedulers, with Ray's argument names. Each is a description the
Rust tuner turns into its own scheduler (sunray-tune's ASHA, HyperBand, median
stopping, PBT)."""

from __future__ import annotations

from ._space import Domain, to_json

__all__ = [
    "ASHAScheduler",
    "AsyncHyperBandScheduler",
    "FIFOScheduler",
    "HyperBandScheduler",
    "MedianStoppingRule",
    "PopulationBasedTraining",
    "TrialScheduler",
]


class TrialScheduler:
    def spec(self, funcs: list) -> dict:
        raise NotImplementedError


def _objective(name: str, time_attr: str, metric, mode) -> dict:
    if mode not in (None, "min", "max"):
        raise ValueError(f'{name}: mode must be "min" or "max", not {mode!r}')
    return {"time_attr": time_attr, "metric": metric, "mode": mode}


def _positive(name: str, what: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError(f"{name}: {what} must be a number > 0, got {v!r}")
    return float(v)


class FIFOScheduler(TrialScheduler):
    def spec(self, funcs: list) -> dict:
        return {"kind": "fifo"}


class AsyncHyperBandScheduler(TrialScheduler):
    """ASHA (Ray's ``ASHAScheduler``)."""

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
    ):
        n = type(self).__name__
        self._spec = {
            "kind": "asha",
            **_objective(n, time_attr, metric, mode),
            "max_t": _positive(n, "max_t", max_t),
            "grace_period": _positive(n, "grace_period", grace_period),
            "reduction_factor": _positive(n, "reduction_factor", reduction_factor),
            "brackets": int(brackets),
            "stop_last_trials": bool(stop_last_trials),
        }
        if grace_period > max_t:
            raise ValueError(f"{n}: grace_period ({grace_period}) must be <= max_t ({max_t})")
        if reduction_factor <= 1:
            raise ValueError(f"{n}: reduction_factor must be > 1, got {reduction_factor}")
        if brackets < 1:
            raise ValueError(f"{n}: brackets must be >= 1, got {brackets}")

    def spec(self, funcs: list) -> dict:
        return self._spec


ASHAScheduler = AsyncHyperBandScheduler


class HyperBandScheduler(TrialScheduler):
    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 81,
        reduction_factor: float = 3,
        stop_last_trials: bool = True,
    ):
        n = "HyperBandScheduler"
        if reduction_factor <= 1:
            raise ValueError(f"{n}: reduction_factor must be > 1, got {reduction_factor}")
        self._spec = {
            "kind": "hyperband",
            **_objective(n, time_attr, metric, mode),
            "max_t": _positive(n, "max_t", max_t),
            "reduction_factor": float(reduction_factor),
        }

    def spec(self, funcs: list) -> dict:
        return self._spec


class MedianStoppingRule(TrialScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        grace_period: float = 60.0,
        min_samples_required: int = 3,
        min_time_slice: float = 0,
        hard_stop: bool = True,
    ):
        n = "MedianStoppingRule"
        if not hard_stop:
            raise NotImplementedError(f"{n}: hard_stop=False (pausing) is not supported")
        if grace_period < 0:
            raise ValueError(f"{n}: grace_period must be >= 0")
        self._spec = {
            "kind": "median",
            **_objective(n, time_attr, metric, mode),
            "grace_period": float(grace_period),
            "min_samples_required": int(min_samples_required),
        }

    def spec(self, funcs: list) -> dict:
        return self._spec


class PopulationBasedTraining(TrialScheduler):
    def __init__(
        self,
        time_attr: str = "time_total_s",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 60.0,
        burn_in_period: float = 0.0,
        hyperparam_mutations: dict | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturbation_factors: tuple = (1.2, 0.8),
        custom_explore_fn=None,
        log_config: bool = True,
        require_attrs: bool = True,
        synch: bool = False,
    ):
        n = "PopulationBasedTraining"
        if synch:
            raise NotImplementedError(
                f"{n}: synch=True is not supported (sunray's PBT is asynchronous)"
            )
        if burn_in_period:
            raise NotImplementedError(f"{n}: burn_in_period is not supported")
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError(f"{n}: give hyperparam_mutations or custom_explore_fn")
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"{n}: quantile_fraction must be in (0, 0.5], got {quantile_fraction}")
        self._mutations = dict(hyperparam_mutations or {})
        self._explore = custom_explore_fn
        self._spec = {
            "kind": "pbt",
            **_objective(n, time_attr, metric, mode),
            "perturbation_interval": _positive(n, "perturbation_interval", perturbation_interval),
            "quantile_fraction": float(quantile_fraction),
            "resample_probability": float(resample_probability),
            "perturbation_factors": [
                float(perturbation_factors[0]),
                float(perturbation_factors[1]),
            ],
        }

    def spec(self, funcs: list) -> dict:
        muts = []

        def walk(prefix: str, d: dict) -> None:
            for k, v in d.items():
                path = f"{prefix}{k}"
                if isinstance(v, Domain):
                    muts.append([path, v.spec(funcs)])
                elif isinstance(v, dict):
                    walk(path + ".", v)
                elif isinstance(v, (list, tuple)):
                    muts.append([path, {"values": to_json(list(v))}])
                elif callable(v):
                    raise NotImplementedError(
                        f"PopulationBasedTraining: mutation {path!r} is a function; give a "
                        "tune domain (tune.uniform(...)) or a list of values"
                    )
                else:
                    raise TypeError(f"PopulationBasedTraining: mutation {path!r}: {v!r}")

        walk("", self._mutations)
        explore = None
        if self._explore is not None:
            funcs.append(self._explore)
            explore = len(funcs) - 1
        return {**self._spec, "mutations": muts, "custom_explore_fn": explore}
