"""``OptunaSearch``: Optuna's samplers (TPE by default) behind Ray's ``Searcher``
interface, through Optuna's ask/tell API. Needs ``optuna`` installed."""

from __future__ import annotations

from .. import _space
from . import Searcher


def _distributions(space: dict, prefix: str = "") -> dict:
    import optuna.distributions as od

    out = {}
    for k, v in space.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and set(v) != {"grid_search"}:
            out.update(_distributions(v, path + "/"))
            continue
        if not isinstance(v, _space.Domain):
            if isinstance(v, dict):
                raise NotImplementedError(f"OptunaSearch: grid_search ({path}) is not supported")
            continue  # a constant: the tuner adds it to every config
        p = v.params
        if v.kind == "uniform":
            out[path] = od.FloatDistribution(p["lower"], p["upper"], step=p["q"])
        elif v.kind == "loguniform":
            if p["q"] is not None:
                raise ValueError(f"OptunaSearch: qloguniform ({path}) has no Optuna equivalent")
            out[path] = od.FloatDistribution(p["lower"], p["upper"], log=True)
        elif v.kind == "randint":
            q = p["q"] or 1
            hi = p["upper"] if p["q"] else p["upper"] - 1
            out[path] = od.IntDistribution(p["lower"], hi, step=q)
        elif v.kind == "lograndint":
            out[path] = od.IntDistribution(p["lower"], p["upper"] - 1, log=True)
        elif v.kind == "choice":
            out[path] = od.CategoricalDistribution(p["values"])
        else:
            raise ValueError(f"OptunaSearch: {v.kind} ({path}) has no Optuna equivalent")
    return out


def _nest(flat: dict) -> dict:
    out: dict = {}
    for path, v in flat.items():
        d = out
        *parents, leaf = path.split("/")
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = v
    return out


class OptunaSearch(Searcher):
    """Ray's ``OptunaSearch(space=None, metric, mode, points_to_evaluate, sampler, seed)``:
    the search space is the Tuner's ``param_space`` (or ``space`` given here, in Ray's
    domains); Optuna's study asks for each trial's config and is told its result."""

    def __init__(
        self,
        space: dict | None = None,
        metric=None,
        mode=None,
        points_to_evaluate=None,
        sampler=None,
        seed=None,
        evaluated_rewards=None,
    ):
        super().__init__(metric, mode)
        if evaluated_rewards is not None:
            raise NotImplementedError("OptunaSearch: evaluated_rewards is not supported")
        self._space = space
        self._points = list(points_to_evaluate or [])
        self._sampler = sampler
        self._seed = seed
        self._study = None
        self._trials: dict = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        super().set_search_properties(metric, mode, config)
        if self._space is None:
            self._space = config
        return True

    def _setup(self):
        import optuna

        if self._mode not in ("min", "max"):
            raise ValueError("OptunaSearch needs mode='min' or 'max' (here or in TuneConfig)")
        sampler = self._sampler or optuna.samplers.TPESampler(seed=self._seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "minimize" if self._mode == "min" else "maximize"
        self._study = optuna.create_study(sampler=sampler, direction=direction)
        self._dists = _distributions(self._space or {})
        for p in self._points:
            self._study.enqueue_trial(p)

    @property
    def study(self):
        return self._study

    def suggest(self, trial_id: str):
        if self._study is None:
            self._setup()
        t = self._study.ask(self._dists)
        self._trials[trial_id] = t
        return _nest(t.params)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        import optuna

        t = self._trials.pop(trial_id, None)
        if t is None:
            return
        value = None if result is None else result.get(self._metric)
        if error or value is None:
            self._study.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(t, value)
