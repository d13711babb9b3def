"""Ray's ``ray.util``: placement groups and scheduling strategies."""

from __future__ import annotations

from .placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)


def get_node_ip_address() -> str:
    """This node's address (inside a task, the task's node)."""
    from .. import get_runtime_context

    return get_runtime_context().get_node_ip()


def list_actors() -> list[dict]:
    """The actors the head knows (alive, pending, restarting, the last dead ones)."""
    from .. import _connect_in_task, _sunray

    _connect_in_task()
    return _sunray.actors()


__all__ = [
    "PlacementGroup",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "list_actors",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
