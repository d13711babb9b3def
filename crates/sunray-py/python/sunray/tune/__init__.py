"""``sunray.tune``: Ray Tune's API (``from sunray import tune``) over sunray-tune's Rust
controller, schedulers, searchers and experiment storage.

>>> from sunray import tune
>>> def train(config):
...     for i in range(10):
...         tune.report({"loss": (config["x"] - 0.3) ** 2 / (i + 1)})
>>> results = tune.Tuner(
...     train,
...     param_space={"x": tune.uniform(0, 1)},
...     tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=20),
... ).fit()
>>> results.get_best_result().config
"""

from __future__ import annotations

from ..exceptions import TuneError
from . import schedulers, search
from ._checkpoint import Checkpoint
from ._config import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ._space import (
    choice,
    grid_search,
    lograndint,
    loguniform,
    qloguniform,
    qrandint,
    qrandn,
    quniform,
    randint,
    randn,
    sample_from,
    uniform,
)
from ._trial import TrainContext, get_checkpoint, get_context, report
from ._tuner import (
    ExperimentAnalysis,
    Result,
    ResultGrid,
    Tuner,
    run,
    with_parameters,
    with_resources,
)


class Trainable:
    """Ray's class API: override ``setup(config)``, ``step()`` (returns a dict of
    metrics; ``"done": True`` ends the trial), ``save_checkpoint(dir)`` and
    ``load_checkpoint(dir)``. Checkpoints are taken every
    ``CheckpointConfig.checkpoint_frequency`` steps and at the end when
    ``checkpoint_at_end``."""

    def __init__(self, config: dict | None = None, **kwargs):
        self.config = dict(config or {})
        self.setup(dict(self.config), **kwargs)

    def setup(self, config: dict, **kwargs) -> None:
        pass

    def step(self) -> dict:
        raise NotImplementedError("a tune.Trainable must implement step()")

    def save_checkpoint(self, checkpoint_dir: str):
        return None

    def load_checkpoint(self, checkpoint) -> None:
        pass

    def cleanup(self) -> None:
        pass

    @property
    def iteration(self) -> int:
        from ._trial import _current

        return _current.session.iteration if _current is not None else 0

    @property
    def trial_id(self) -> str:
        return get_context().get_trial_id()


def __getattr__(name: str):
    raise AttributeError(
        f"sunray.tune has no {name!r}: this Ray Tune API is not implemented by sunray"
    )


__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "ExperimentAnalysis",
    "FailureConfig",
    "Result",
    "ResultGrid",
    "RunConfig",
    "TrainContext",
    "Trainable",
    "TuneConfig",
    "TuneError",
    "Tuner",
    "choice",
    "get_checkpoint",
    "get_context",
    "grid_search",
    "lograndint",
    "loguniform",
    "qloguniform",
    "qrandint",
    "qrandn",
    "quniform",
    "randint",
    "randn",
    "report",
    "run",
    "sample_from",
    "schedulers",
    "search",
    "uniform",
    "with_parameters",
    "with_resources",
]
