"""Ray's scheduling strategies for ``.options(scheduling_strategy=...)``."""

from __future__ import annotations

from .placement_group import PlacementGroup


class PlacementGroupSchedulingStrategy:
    """Run in ``placement_group``'s bundle ``placement_group_bundle_index`` (-1: any
    bundle with room)."""

    def __init__(
        self,
        placement_group: PlacementGroup,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ):
        if not isinstance(placement_group, PlacementGroup):
            raise TypeError(f"placement_group must be a PlacementGroup, got {placement_group!r}")
        i = placement_group_bundle_index
        if not (isinstance(i, int) and -1 <= i < placement_group.bundle_count):
            raise ValueError(
                f"placement_group_bundle_index must be -1 or 0..{placement_group.bundle_count - 1}, "
                f"got {i!r}"
            )
        self.placement_group = placement_group
        self.placement_group_bundle_index = i

    def _bundle(self) -> tuple[int, int | None]:
        i = self.placement_group_bundle_index
        return (self.placement_group.id, None if i < 0 else i)


def bundle_of(options: dict) -> tuple[int, int | None] | None:
    """The (group, bundle) a task's options place it in, if any."""
    s = options.get("scheduling_strategy")
    if isinstance(s, PlacementGroupSchedulingStrategy):
        return s._bundle()
    if s not in (None, "DEFAULT", "SPREAD"):
        raise ValueError(
            f'scheduling_strategy must be None, "DEFAULT", "SPREAD" or a '
            f"PlacementGroupSchedulingStrategy, got {s!r}"
        )
    return None


class NodeAffinitySchedulingStrategy:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("NodeAffinitySchedulingStrategy is not supported by sunray yet")


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
