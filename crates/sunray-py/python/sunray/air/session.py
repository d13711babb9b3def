"""Ray AIR's ``session``: ``session.report(metrics, checkpoint=...)``,
``session.get_checkpoint()`` and the trial's names."""

from __future__ import annotations

from ..tune import get_checkpoint, get_context, report


def get_trial_id() -> str:
    return get_context().get_trial_id()


def get_trial_name() -> str:
    return get_context().get_trial_name()


def get_trial_dir() -> str:
    return get_context().get_trial_dir()


def get_experiment_name() -> str:
    return get_context().get_experiment_name()


def get_trial_resources() -> dict:
    return get_context().get_trial_resources()


def get_world_rank() -> int:
    return 0


def get_local_rank() -> int:
    return 0


def get_world_size() -> int:
    return 1


__all__ = [
    "get_checkpoint",
    "get_experiment_name",
    "get_local_rank",
    "get_trial_dir",
    "get_trial_id",
    "get_trial_name",
    "get_trial_resources",
    "get_world_rank",
    "get_world_size",
    "report",
]
