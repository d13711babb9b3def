"""Placement groups (Ray's ``ray.util.placement_group``): bundles of resources reserved
on the cluster all at once under a strategy; tasks and actors run in a bundle with
``scheduling_strategy=PlacementGroupSchedulingStrategy(pg, bundle_index)``. The head
places the bundles (sunray's scheduler); this module only describes them."""

from __future__ import annotations

from .. import _serialization as ser
from .. import _sunray

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementGroup:
    """A reservation: ``ready()`` is an ObjectRef that becomes ready once every bundle
    is reserved; ``wait(timeout_seconds)`` says whether that happened in time."""

    def __init__(self, ready_ref, bundles: list[dict]):
        self._ready = ready_ref
        self.id = ready_ref.id
        self.bundle_specs = bundles

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def ready(self):
        return self._ready

    def wait(self, timeout_seconds: float = 30) -> bool:
        return _sunray.wait([self.id], 1, timeout_seconds)[0]

    def __reduce__(self):
        return (_named_group, (self.id, self.bundle_specs))

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"PlacementGroup({self.id:016x}, {len(self.bundle_specs)} bundles)"


def _named_group(gid: int, bundles: list[dict]) -> PlacementGroup:
    return PlacementGroup(_sunray._named_ref(gid), bundles)


def _bundle_tuple(b: dict) -> tuple[float, float, float, list[tuple[str, float]]]:
    if not isinstance(b, dict) or not b:
        raise ValueError(f"a bundle is a non-empty dict of resources, got {b!r}")
    for k, v in b.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0):
            raise ValueError(f"bundle resource {k!r} must be a number >= 0, got {v!r}")
    if not any(b.values()):
        raise ValueError(f"a bundle must ask for some resource, got {b!r}")
    custom = [(str(k), float(v)) for k, v in b.items() if k not in ("CPU", "GPU", "memory")]
    return (float(b.get("CPU", 0)), float(b.get("GPU", 0)), float(b.get("memory", 0)), custom)


def placement_group(
    bundles: list[dict],
    strategy: str = "PACK",
    name: str = "",
    lifetime: str | None = None,
    **kwargs,
) -> PlacementGroup:
    """Reserves ``bundles`` (e.g. ``[{"CPU": 2, "GPU": 1}] * 2``) under ``strategy``:
    PACK (few nodes), SPREAD (many nodes), STRICT_PACK (one node), STRICT_SPREAD (a
    node per bundle). Returns at once; the head reserves them all or none, and warns
    this driver when the cluster cannot ever hold them."""
    from .. import _connect_in_task, init

    if kwargs:
        raise TypeError(f"unsupported placement_group arguments: {', '.join(sorted(kwargs))}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if lifetime not in (None, "detached"):
        raise ValueError(f'lifetime must be None or "detached", got {lifetime!r}')
    bundles = list(bundles)
    if not bundles:
        raise ValueError("a placement group needs at least one bundle")
    wire = [_bundle_tuple(b) for b in bundles]
    _connect_in_task()
    if not _sunray.is_initialized():
        init()
    ref = _sunray.create_placement_group(
        wire, strategy, name or None, ser.dumps(None), lifetime == "detached"
    )
    return PlacementGroup(ref, [dict(b) for b in bundles])


def get_placement_group(name: str) -> PlacementGroup:
    """The live placement group named ``name`` (a detached one made by another driver,
    say); ``ValueError`` if there is none."""
    from .. import _connect_in_task, init

    _connect_in_task()
    if not _sunray.is_initialized():
        init()
    for r in _sunray.placement_groups():
        if r["name"] == name and r["state"] != "REMOVED":
            return PlacementGroup(_sunray._named_ref(r["id"]), r["bundles"])
    raise ValueError(f"no placement group named {name!r}")


def remove_placement_group(pg: PlacementGroup) -> None:
    """Frees the group's bundles; its tasks and actors fail."""
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {pg!r}")
    _sunray.remove_placement_group(pg.id)


def placement_group_table(pg: PlacementGroup | None = None):
    """Every group the head knows (or one), as dicts with Ray's keys (``state``,
    ``strategy``, ``bundles``, ``bundles_to_node_id``) and ``reason`` (why it waits)."""
    rows = {r["id"]: r for r in _sunray.placement_groups()}
    if pg is not None:
        return rows.get(pg.id, {})
    return {f"{k:016x}": v for k, v in rows.items()}


def get_current_placement_group() -> PlacementGroup | None:
    """sunray does not tell a task which group it runs in: always None."""
    return None
