"""Search algorithms: Ray's random/grid search (``BasicVariantGenerator``), sunray's
native TPE (``TPESearch``), ``ConcurrencyLimiter``, and Ray's ``Searcher`` interface to
write one in Python (``sunray.tune.search.optuna.OptunaSearch`` is one)."""

from __future__ import annotations

from .._space import to_json

__all__ = ["BasicVariantGenerator", "ConcurrencyLimiter", "Searcher", "TPESearch"]


def _points(points) -> list:
    if points is None:
        return []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise TypeError("points_to_evaluate must be a list of dicts")
    return to_json(points)


class BasicVariantGenerator:
    """Random search, with ``grid_search`` parameters expanded (Ray's default)."""

    def __init__(self, points_to_evaluate=None, max_concurrent: int = 0, random_state=None):
        self._points = _points(points_to_evaluate)
        self._max_concurrent = int(max_concurrent)
        self.seed = None if random_state is None else int(random_state)

    def spec(self, funcs: list) -> dict:
        s = {"kind": "basic", "points_to_evaluate": self._points}
        if self._max_concurrent > 0:
            return {"kind": "limited", "inner": s, "max_concurrent": self._max_concurrent}
        return s


class TPESearch:
    """sunray's Tree-structured Parzen Estimator (Rust), built as Optuna 5's, with its
    option names: 10 random trials first, 24 candidates, one kernel per trial over all
    parameters (``multivariate``), running trials counted as bad (``constant_liar``),
    prior weight 1, ``consider_endpoints=False``. The good set differs from Optuna's
    (measured better on every function of ``bench/tpe.sh`` run sequentially): the best
    ``min(ceil(0.05 n), 25)`` results, with kernels that narrow as results accumulate
    (``sharp_good_kernels``); ``gamma=0.1, sharp_good_kernels=False`` is Optuna's rule.
    ``gamma`` is a fraction (capped at 25 trials) or, as in Optuna, a function from the
    number of results to the good set's size."""

    def __init__(
        self,
        metric: str | None = None,
        mode: str | None = None,
        points_to_evaluate=None,
        n_startup_trials: int | None = None,
        n_ei_candidates: int | None = None,
        gamma=None,
        multivariate: bool | None = None,
        constant_liar: bool | None = None,
        prior_weight: float | None = None,
        consider_endpoints: bool | None = None,
        sharp_good_kernels: bool | None = None,
        seed: int | None = None,
    ):
        if metric is not None or mode is not None:
            self.metric, self.mode = metric, mode
        if gamma is not None and not callable(gamma):
            if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
                raise TypeError("TPESearch: gamma is a fraction or a function n -> int")
            if not 0 < gamma < 1:
                raise ValueError("TPESearch: gamma must be between 0 and 1")
        if prior_weight is not None and not prior_weight > 0:
            raise ValueError("TPESearch: prior_weight must be positive")
        self._gamma = gamma
        self._spec = {
            "kind": "tpe",
            "n_startup_trials": n_startup_trials,
            "n_ei_candidates": n_ei_candidates,
            "gamma": None if callable(gamma) else gamma,
            "multivariate": multivariate,
            "constant_liar": constant_liar,
            "prior_weight": prior_weight,
            "consider_endpoints": consider_endpoints,
            "sharp_good_kernels": sharp_good_kernels,
            "points_to_evaluate": _points(points_to_evaluate),
        }
        self.seed = seed

    def spec(self, funcs: list) -> dict:
        gamma_fn = None
        if callable(self._gamma):
            funcs.append(self._gamma)
            gamma_fn = len(funcs) - 1
        return {**self._spec, "gamma_fn": gamma_fn}


class ConcurrencyLimiter:
    """At most ``max_concurrent`` trials of ``searcher`` at once."""

    def __init__(self, searcher, max_concurrent: int, batch: bool = False):
        if max_concurrent < 1:
            raise ValueError("ConcurrencyLimiter: max_concurrent must be >= 1")
        if batch:
            raise NotImplementedError("ConcurrencyLimiter: batch=True is not supported")
        self.searcher = searcher
        self.max_concurrent = int(max_concurrent)
        self.seed = getattr(searcher, "seed", None)

    def spec(self, funcs: list) -> dict:
        inner = self.searcher.spec(funcs) if hasattr(self.searcher, "spec") else {"kind": "python"}
        return {"kind": "limited", "inner": inner, "max_concurrent": self.max_concurrent}


class Searcher:
    """Ray's searcher interface, for search algorithms written in Python: implement
    ``suggest(trial_id)`` (a config dict; None: nothing yet; ``Searcher.FINISHED``: no
    more) and ``on_trial_complete(trial_id, result, error)``; ``get_state``/``set_state``
    make it resumable with the experiment. The Rust tuner calls them."""

    FINISHED = "FINISHED"

    def __init__(self, metric: str | None = None, mode: str | None = None):
        self._metric = metric
        self._mode = mode

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def mode(self) -> str | None:
        return self._mode

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec
    ) -> bool:
        if self._metric is None:
            self._metric = metric
        if self._mode is None:
            self._mode = mode
        return True

    def suggest(self, trial_id: str):
        raise NotImplementedError

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        pass

    def get_state(self):
        """JSON data the searcher resumes from (None: it cannot resume)."""
        return

    def set_state(self, state) -> None:
        pass
