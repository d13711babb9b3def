"""``Tuner``, ``ResultGrid``, ``Result`` and the legacy ``tune.run``: Python gathers
Ray's arguments into a description; sunray-tune's Rust controller runs it."""

from __future__ import annotations

import datetime
import json
import os
import secrets

import cloudpickle

from .. import _sunray
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ._space import space_spec, to_json
from ._trial import TrialProgram, run_trial
from .schedulers import FIFOScheduler, TrialScheduler
from .search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

#: What Ray calls the Python objects of an experiment, kept beside it for restore.
_TUNER_FILE = "tuner.pkl"


class _WithResources:
    def __init__(self, trainable, resources: dict):
        self.trainable = trainable
        self.resources = resources


class _WithParameters:
    def __init__(self, trainable, params: dict):
        self.trainable = trainable
        self.params = params


def with_resources(trainable, resources: dict):
    """The trainable, with the resources each trial holds: ``{"cpu": 2, "gpu": 1}``
    (and custom resources by name)."""
    if callable(resources) and not isinstance(resources, dict):
        raise NotImplementedError("with_resources: a function of the config is not supported")
    if not isinstance(resources, dict):
        raise TypeError("with_resources takes a dict such as {'cpu': 2, 'gpu': 1}")
    out = {}
    for k, v in resources.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"with_resources: {k} must be a number >= 0, got {v!r}")
        out[str(k)] = float(v)
    return _WithResources(trainable, out)


def with_parameters(trainable, **kwargs):
    """The trainable, called with these objects as keyword arguments; each is put in the
    cluster's object store once (not pickled into every trial)."""
    return _WithParameters(trainable, kwargs)


def _unwrap(trainable):
    resources: dict = {}
    params: dict = {}
    while isinstance(trainable, (_WithResources, _WithParameters)):
        if isinstance(trainable, _WithResources):
            resources = {**trainable.resources, **resources}
        else:
            params = {**trainable.params, **params}
        trainable = trainable.trainable
    if isinstance(trainable, str):
        raise NotImplementedError(
            "registered trainables by name are not supported: pass the function"
        )
    if not callable(trainable):
        raise TypeError(
            f"the trainable must be a function or a tune.Trainable class, got {trainable!r}"
        )
    return trainable, resources, params


def _trainable_name(t) -> str:
    return getattr(t, "__name__", type(t).__name__)


def _resource_args(resources: dict) -> dict:
    cpu, gpu, memory, custom = 1.0, 0.0, 0.0, []
    for k, v in resources.items():
        key = k.lower()
        if key == "cpu":
            cpu = v
        elif key == "gpu":
            gpu = v
        elif key == "memory":
            memory = v
        else:
            custom.append([k, v])
    return {"num_cpus": cpu, "num_gpus": gpu, "memory": memory, "resources": custom}


def _searcher_seed(s):
    return getattr(s, "seed", None)


class Tuner:
    """Ray Tune's ``Tuner``: ``Tuner(trainable, param_space=..., tune_config=...,
    run_config=...).fit()``."""

    def __init__(
        self,
        trainable=None,
        *,
        param_space: dict | None = None,
        tune_config=None,
        run_config=None,
        _restore=None,
    ):
        if trainable is None:
            raise TypeError("Tuner needs a trainable")
        self._trainable = trainable
        self._param_space = param_space or {}
        self._tune_config = tune_config or TuneConfig()
        self._run_config = run_config or RunConfig()
        self._restore = _restore
        if not isinstance(self._tune_config, TuneConfig):
            raise TypeError("tune_config must be a tune.TuneConfig")
        if not isinstance(self._run_config, RunConfig):
            raise TypeError("run_config must be a tune.RunConfig (or train.RunConfig)")

    @classmethod
    def can_restore(cls, path: str | os.PathLike) -> bool:
        return _sunray.tune_can_restore(os.fspath(path))

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike,
        trainable,
        resume_unfinished: bool = True,
        resume_errored: bool = False,
        restart_errored: bool = False,
        param_space: dict | None = None,
        **kwargs,
    ) -> Tuner:
        """Continues the experiment at ``path``: finished trials stay finished,
        interrupted ones continue from their last checkpoint, the searcher and scheduler
        from their saved state."""
        path = os.path.abspath(os.fspath(path))
        if not cls.can_restore(path):
            raise ValueError(f"no experiment to restore at {path} (no experiment_state.json there)")
        if not resume_unfinished:
            raise NotImplementedError("Tuner.restore: resume_unfinished=False is not supported")
        try:
            with open(os.path.join(path, _TUNER_FILE), "rb") as f:
                saved = cloudpickle.load(f)
        except FileNotFoundError:
            raise ValueError(
                f"{path} has no {_TUNER_FILE}: it was not written by sunray's Python tuner"
            ) from None
        space, tc, rc = saved["param_space"], saved["tune_config"], saved["run_config"]
        if param_space is not None:
            space = param_space
        return cls(
            trainable,
            param_space=space,
            tune_config=tc,
            run_config=rc,
            _restore=(path, bool(resume_errored), bool(restart_errored)),
        )

    def _spec(self, funcs: list, name: str) -> tuple[dict, object]:
        tc, rc = self._tune_config, self._run_config
        scheduler = tc.scheduler or FIFOScheduler()
        if not isinstance(scheduler, TrialScheduler):
            raise TypeError(
                f"scheduler must be one of sunray.tune.schedulers', got {type(scheduler).__name__}"
            )
        search = tc.search_alg or BasicVariantGenerator()
        py_searcher = None
        inner = search.searcher if isinstance(search, ConcurrencyLimiter) else search
        if isinstance(inner, Searcher):
            inner.set_search_properties(tc.metric, tc.mode, self._param_space)
            py_searcher = inner
        elif not hasattr(inner, "spec"):
            raise TypeError(
                f"search_alg {type(inner).__name__} is not a sunray searcher nor a tune.search.Searcher"
            )
        searcher_spec = search.spec(funcs) if hasattr(search, "spec") else {"kind": "python"}
        m = getattr(inner, "metric", None)
        metric, mode = tc.metric, tc.mode
        if metric is None and isinstance(m, str):
            metric, mode = m, getattr(inner, "mode", None)
        seed = tc.seed if tc.seed is not None else _searcher_seed(search)
        if seed is None and os.environ.get("SUNRAY_TUNE_SEED"):
            # Makes a script's search repeat without editing it (a Slurm job rerun).
            seed = int(os.environ["SUNRAY_TUNE_SEED"])
        if seed is None:
            seed = secrets.randbits(63)
        stop = rc.stop
        thresholds, stop_fn = [], None
        if isinstance(stop, dict):
            for k, v in stop.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError(f"RunConfig.stop: {k!r} must be a number, got {v!r}")
                thresholds.append([k, float(v)])
        elif callable(stop):
            funcs.append(stop)
            stop_fn = len(funcs) - 1
        elif stop is not None:
            raise TypeError(
                "RunConfig.stop takes a dict, a function (trial_id, result) -> bool, or None"
            )
        cc = rc.checkpoint_config or CheckpointConfig()
        fc = rc.failure_config or FailureConfig()
        budget = tc.time_budget_s
        if isinstance(budget, datetime.timedelta):
            budget = budget.total_seconds()
        verbose = 1 if rc.verbose is None else rc.verbose
        num_samples = tc.num_samples if tc.num_samples > 0 else 2**31
        if tc.num_samples == -1 and budget is None:
            raise ValueError("TuneConfig: num_samples=-1 needs a time_budget_s")
        spec = {
            "trainable": name,
            "space": space_spec(self._param_space, funcs),
            "metric": metric,
            "mode": mode,
            "num_samples": num_samples,
            "scheduler": scheduler.spec(funcs),
            "searcher": searcher_spec,
            "max_concurrent_trials": tc.max_concurrent_trials,
            "time_budget_s": None if budget is None else float(budget),
            "seed": int(seed) % 2**63,
            "name": rc.name,
            "storage_path": None
            if rc.storage_path is None
            else os.path.abspath(os.path.expanduser(rc.storage_path)),
            "stop": {"thresholds": thresholds, "func": stop_fn},
            "num_to_keep": cc.num_to_keep,
            "checkpoint_score_attribute": cc.checkpoint_score_attribute,
            "checkpoint_score_order": cc.checkpoint_score_order,
            "max_failures": 2**31 if fc.max_failures == -1 else fc.max_failures,
            # Ray's verbose 1 and 2 print status tables; 3 also each result.
            "verbosity": {0: 0, 1: 2, 2: 2, 3: 3}[verbose],
            "progress_interval_s": rc.progress_interval_s,
            "restore": None,
            "resume_errored": False,
            "restart_errored": False,
        }
        return spec, py_searcher

    def fit(self) -> ResultGrid:
        import sunray

        if not sunray.is_initialized():
            sunray.init()
        fn, resources, params = _unwrap(self._trainable)
        funcs: list = []
        spec, py_searcher = self._spec(funcs, _trainable_name(fn))
        spec.update(_resource_args(resources))
        if self._restore is not None:
            spec["restore"], spec["resume_errored"], spec["restart_errored"] = self._restore
        cc = self._run_config.checkpoint_config or CheckpointConfig()
        options = {
            "checkpoint_frequency": cc.checkpoint_frequency,
            "checkpoint_at_end": bool(cc.checkpoint_at_end),
            "resources": resources or {"cpu": 1.0},
        }
        program = sunray.put(TrialProgram(fn, list(params), options))
        refs = [sunray.put(v) for v in params.values()]
        opts = {"num_cpus": spec["num_cpus"], "num_gpus": spec["num_gpus"], "max_retries": 0}
        if spec["memory"]:
            opts["memory"] = spec["memory"]
        if spec["resources"]:
            opts["resources"] = dict(spec["resources"])
        task = sunray.remote(run_trial).options(**opts)

        def launch(trial_id: str, experiment_dir: str, marker: str):
            if self._saved_to != experiment_dir:
                self._save(experiment_dir)
            return task.remote(program, trial_id, experiment_dir, marker, *refs)

        self._saved_to = None
        path = _sunray.tune_fit(json.dumps(spec), funcs, py_searcher, launch)
        if self._saved_to != path:
            self._save(path)
        return ResultGrid(path)

    def _save(self, experiment_dir: str) -> None:
        """Keeps the Python objects of the experiment (space, configs, searcher,
        scheduler) beside it, so that ``Tuner.restore(path, trainable)`` needs no more."""
        tmp = os.path.join(experiment_dir, f".{_TUNER_FILE}.tmp")
        try:
            with open(tmp, "wb") as f:
                cloudpickle.dump(
                    {
                        "param_space": self._param_space,
                        "tune_config": self._tune_config,
                        "run_config": self._run_config,
                    },
                    f,
                )
            os.replace(tmp, os.path.join(experiment_dir, _TUNER_FILE))
        except Exception as e:  # noqa: BLE001 - restore then needs the objects again
            import warnings

            warnings.warn(f"cannot save {_TUNER_FILE} in {experiment_dir}: {e}", stacklevel=2)
        self._saved_to = experiment_dir


class Result:
    """One trial's outcome (Ray's ``ray.train.Result``)."""

    def __init__(self, record: dict):
        self._r = record
        self.config: dict = record["config"]
        self.metrics: dict = record["metrics"]
        self.path: str = record["path"]
        self.status: str = record["status"]
        self.trial_id: str = record["trial_id"]
        c = record["checkpoint"]
        self.checkpoint: Checkpoint | None = Checkpoint(c) if c else None
        self.best_checkpoints: list[tuple[Checkpoint, dict]] = [
            (Checkpoint(p), m) for p, m in record["checkpoints"]
        ]
        err = record["error"]
        self.error = None
        if err is not None:
            from ..exceptions import TuneError

            self.error = TuneError(err)

    @property
    def metrics_dataframe(self):
        import pandas as pd

        p = os.path.join(self.path, "progress.csv")
        return pd.read_csv(p) if os.path.exists(p) else pd.DataFrame()

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items() if k != "config"}
        return f"Result(metrics={shown}, path={self.path!r}, checkpoint={self.checkpoint})"


class ResultGrid:
    """Every trial of an experiment, read back from its directory."""

    def __init__(self, experiment_path: str):
        data = json.loads(_sunray.tune_results(experiment_path))
        self.experiment_path: str = data["path"]
        self._metric = data["metric"]
        self._mode = data["mode"]
        self._results = [Result(r) for r in data["trials"]]

    def get_best_result(
        self,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        filter_nan_and_inf: bool = True,
    ) -> Result:
        best = _sunray.tune_best(self.experiment_path, metric, mode, scope)
        return next(r for r in self._results if r.trial_id == best)

    def get_dataframe(self, filter_metric: str | None = None, filter_mode: str | None = None):
        import pandas as pd

        rows = []
        for r in self._results:
            row = {k: v for k, v in r.metrics.items() if k != "config"}
            if filter_metric is not None:
                hist = r.metrics_dataframe
                if filter_metric in hist:
                    i = (
                        hist[filter_metric].idxmin()
                        if filter_mode == "min"
                        else hist[filter_metric].idxmax()
                    )
                    row = {
                        k: v
                        for k, v in hist.loc[i].to_dict().items()
                        if not k.startswith("config/")
                    }
            for k, v in _flatten(r.config, "config/"):
                row[k] = v
            row["trial_id"] = r.trial_id
            row["logdir"] = r.path
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def errors(self) -> list:
        return [r.error for r in self._results if r.error is not None]

    @property
    def num_errors(self) -> int:
        return sum(r.status == "ERROR" for r in self._results)

    @property
    def num_terminated(self) -> int:
        return sum(r.status == "TERMINATED" for r in self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    def __iter__(self):
        return iter(self._results)

    def __repr__(self) -> str:
        return f"ResultGrid<{len(self)} trials at {self.experiment_path}>"


def _flatten(d: dict, prefix: str):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", v


class ExperimentAnalysis:
    """What the legacy ``tune.run`` returns."""

    def __init__(self, grid: ResultGrid, metric: str | None, mode: str | None):
        self._grid = grid
        self.default_metric = metric
        self.default_mode = mode
        self.experiment_path = grid.experiment_path

    def _best(self, metric=None, mode=None, scope="last") -> Result:
        return self._grid.get_best_result(
            metric or self.default_metric, mode or self.default_mode, scope
        )

    def get_best_config(self, metric=None, mode=None, scope="last") -> dict:
        return self._best(metric, mode, scope).config

    def get_best_checkpoint(self, trial=None, metric=None, mode=None):
        return self._best(metric, mode).checkpoint

    @property
    def best_config(self) -> dict:
        return self._best().config

    @property
    def best_result(self) -> dict:
        return self._best().metrics

    @property
    def best_checkpoint(self):
        return self._best().checkpoint

    @property
    def best_logdir(self) -> str:
        return self._best().path

    @property
    def best_trial(self) -> Result:
        return self._best()

    @property
    def results(self) -> dict:
        return {r.trial_id: r.metrics for r in self._grid}

    @property
    def trials(self) -> list:
        return list(self._grid)

    def dataframe(self, metric=None, mode=None):
        return self._grid.get_dataframe(metric, mode)

    @property
    def results_df(self):
        return self._grid.get_dataframe()


def run(
    run_or_experiment,
    *,
    name: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    stop=None,
    time_budget_s=None,
    config: dict | None = None,
    resources_per_trial: dict | None = None,
    num_samples: int = 1,
    storage_path: str | None = None,
    local_dir: str | None = None,
    search_alg=None,
    scheduler=None,
    checkpoint_config: CheckpointConfig | None = None,
    keep_checkpoints_num: int | None = None,
    checkpoint_score_attr: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    verbose: int = 1,
    max_failures: int = 0,
    max_concurrent_trials: int | None = None,
    resume=None,
    raise_on_failed_trial: bool = True,
    reuse_actors=None,
    **kwargs,
) -> ExperimentAnalysis:
    """Ray's legacy ``tune.run``: runs the experiment and returns its analysis."""
    ignored = {"progress_reporter", "log_to_file", "sync_config", "callbacks", "fail_fast"}
    unknown = set(kwargs) - ignored
    if unknown:
        raise TypeError(
            f"tune.run() got arguments sunray does not support: {', '.join(sorted(unknown))}"
        )
    trainable = run_or_experiment
    if resources_per_trial:
        trainable = with_resources(trainable, resources_per_trial)
    if checkpoint_config is None:
        order = "max"
        attr = checkpoint_score_attr
        if attr and attr.startswith("min-"):
            attr, order = attr[4:], "min"
        checkpoint_config = CheckpointConfig(
            num_to_keep=keep_checkpoints_num,
            checkpoint_score_attribute=attr,
            checkpoint_score_order=order,
            checkpoint_frequency=checkpoint_freq,
            checkpoint_at_end=checkpoint_at_end,
        )
    rc = RunConfig(
        name=name,
        storage_path=storage_path or local_dir,
        stop=stop,
        checkpoint_config=checkpoint_config,
        failure_config=FailureConfig(max_failures=max_failures),
        verbose=verbose,
    )
    tc = TuneConfig(
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        scheduler=scheduler,
        search_alg=search_alg,
        max_concurrent_trials=max_concurrent_trials,
        time_budget_s=time_budget_s,
    )
    tuner = Tuner(trainable, param_space=config or {}, tune_config=tc, run_config=rc)
    if resume:
        exp = os.path.join(
            os.path.expanduser(storage_path or local_dir or "~/sunray_results"), name or ""
        )
        if name and Tuner.can_restore(exp):
            tuner = Tuner.restore(exp, trainable, resume_errored=resume == "ERRORED_ONLY")
    grid = tuner.fit()
    if raise_on_failed_trial and grid.num_errors:
        from ..exceptions import TuneError

        raise TuneError(
            f"{grid.num_errors} trial(s) did not complete: {[str(e) for e in grid.errors]}"
        )
    return ExperimentAnalysis(grid, metric, mode)


__all__ = [
    "ExperimentAnalysis",
    "Result",
    "ResultGrid",
    "Tuner",
    "run",
    "to_json",
    "with_parameters",
    "with_resources",
]
