"""``sunray.air``: Ray AIR's names (``from ray.air import session``, ``RunConfig``…), as
older Ray Tune scripts import them."""

from __future__ import annotations

from ..tune import Checkpoint, CheckpointConfig, FailureConfig, Result, RunConfig
from . import session


def __getattr__(name: str):
    raise AttributeError(
        f"sunray.air has no {name!r}: this Ray AIR API is not implemented by sunray"
    )


__all__ = ["Checkpoint", "CheckpointConfig", "FailureConfig", "Result", "RunConfig", "session"]
