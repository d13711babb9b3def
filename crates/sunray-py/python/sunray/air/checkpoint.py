"""Ray AIR's ``Checkpoint`` (``from ray.air.checkpoint import Checkpoint``)."""

from ..tune import Checkpoint

__all__ = ["Checkpoint"]
