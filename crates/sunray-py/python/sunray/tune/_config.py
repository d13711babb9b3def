"""Ray's experiment settings: ``TuneConfig``, ``RunConfig``, ``CheckpointConfig``,
``FailureConfig``. Plain records; the Rust tuner reads them."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from typing import Any


def _check_mode(mode: str | None, what: str) -> None:
    if mode not in (None, "min", "max"):
        raise ValueError(f'{what}: mode must be "min" or "max", not {mode!r}')


@dataclasses.dataclass
class TuneConfig:
    metric: str | None = None
    mode: str | None = None
    search_alg: Any = None
    scheduler: Any = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    time_budget_s: float | datetime.timedelta | None = None
    reuse_actors: bool | None = None
    trial_name_creator: Callable | None = None
    trial_dirname_creator: Callable | None = None
    #: sunray: the seed of every random draw (configs, ASHA brackets, PBT); default:
    #: a searcher's own ``seed``/``random_state``, else a fresh random one.
    seed: int | None = None

    def __post_init__(self):
        _check_mode(self.mode, "TuneConfig")
        if (self.metric is None) != (self.mode is None):
            raise ValueError("TuneConfig: give both metric and mode, or neither")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool):
            raise TypeError(f"TuneConfig: num_samples must be an integer, got {self.num_samples!r}")
        if self.num_samples == 0 or self.num_samples < -1:
            raise ValueError("TuneConfig: num_samples must be >= 1 (or -1: until the time budget)")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError("TuneConfig: max_concurrent_trials must be >= 1")
        if self.trial_name_creator is not None or self.trial_dirname_creator is not None:
            raise NotImplementedError(
                "TuneConfig: trial_name_creator/trial_dirname_creator are not supported by "
                "sunray (trials are named as Ray names them by default)"
            )


@dataclasses.dataclass
class CheckpointConfig:
    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"
    checkpoint_frequency: int = 0
    checkpoint_at_end: bool | None = None

    def __post_init__(self):
        _check_mode(self.checkpoint_score_order, "CheckpointConfig")
        if self.num_to_keep is not None and self.num_to_keep < 1:
            raise ValueError("CheckpointConfig: num_to_keep must be >= 1 or None (keep all)")


@dataclasses.dataclass
class FailureConfig:
    max_failures: int = 0
    fail_fast: bool = False

    def __post_init__(self):
        if self.max_failures < -1:
            raise ValueError("FailureConfig: max_failures must be >= 0, or -1 (retry forever)")


@dataclasses.dataclass
class RunConfig:
    name: str | None = None
    storage_path: str | None = None
    stop: dict | Callable | None = None
    checkpoint_config: CheckpointConfig | None = None
    failure_config: FailureConfig | None = None
    verbose: int | None = None
    callbacks: list | None = None
    progress_reporter: Any = None
    log_to_file: bool = False
    storage_filesystem: Any = None
    sync_config: Any = None
    #: sunray: seconds between status tables (Ray prints about every 5 s too).
    progress_interval_s: float | None = None

    def __post_init__(self):
        if self.callbacks:
            raise NotImplementedError("RunConfig: callbacks are not supported by sunray yet")
        if self.progress_reporter is not None:
            raise NotImplementedError(
                "RunConfig: a custom progress_reporter is not supported (sunray prints "
                "Ray's CLI status table; set verbose=0 to silence it)"
            )
        if self.storage_filesystem is not None:
            raise NotImplementedError(
                "RunConfig: storage_filesystem (cloud storage) is not supported"
            )
        if self.verbose is not None and self.verbose not in (0, 1, 2, 3):
            raise ValueError(f"RunConfig: verbose must be 0, 1, 2 or 3, got {self.verbose!r}")
