"""``sunray.train``: the names Ray Tune scripts import from ``ray.train`` (reporting,
checkpoints, run settings). Distributed training (``TorchTrainer``) is not in sunray."""

from __future__ import annotations

from ..tune import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    Result,
    RunConfig,
    get_checkpoint,
    get_context,
    report,
)


def __getattr__(name: str):
    raise AttributeError(
        f"sunray.train has no {name!r}: this Ray Train API is not implemented by sunray"
    )


__all__ = [
    "Checkpoint",
    "CheckpointConfig",
    "FailureConfig",
    "Result",
    "RunConfig",
    "get_checkpoint",
    "get_context",
    "report",
]
