"""Large objects stay in the object store of the node that made them, through the
Python front end against the installed wheel: tasks and the driver read them from that
node; a result whose node died is made again; a task's ``put`` is lost with its node."""

from __future__ import annotations

import pytest

import sunray as ray
from sunray.exceptions import ObjectLostError

MB = 1 << 20


@pytest.fixture
def stores(tmp, monkeypatch):
    """A head without CPUs and nodes 127.0.0.2 ("maker") and 127.0.0.3 ("reader")."""
    from conftest import started

    yield from started(
        tmp,
        monkeypatch,
        [
            ("127.0.0.2", {"cpus": 1, "resources": {"maker": 1}}),
            ("127.0.0.3", {"cpus": 1, "resources": {"reader": 1}}),
        ],
    )


@ray.remote
def make(n, fill):
    return bytes([fill]) * n, ray.get_runtime_context().get_node_ip()


@ray.remote
def inspect(blob, fill):
    data, made = blob
    here = ray.get_runtime_context().get_node_ip()
    return len(data), data == bytes([fill]) * len(data), made, here


@ray.remote
def stash(n):
    """A put inside a task (a large one stays on this node), returned inside a list."""
    ref = ray.put(b"p" * n)
    return [ref], ray.get_runtime_context().get_node_ip()


@ray.remote
def read_nested(refs, go):
    """Reads the refs it was given inside a list, once the file ``go`` exists."""
    import os
    import time

    while not os.path.exists(go):
        time.sleep(0.01)
    return [len(ray.get(r)) for r in refs]


def test_a_large_result_is_read_from_its_node_by_a_task_elsewhere_and_by_the_driver(stores):
    ray.init(stores.address)
    blob = make.options(resources={"maker": 1}).remote(50 * MB, 7)
    seen = ray.get(inspect.options(resources={"reader": 1}).remote(blob, 7))
    assert seen == (50 * MB, True, "127.0.0.2", "127.0.0.3")
    data, made = ray.get(blob)
    assert len(data) == 50 * MB and made == "127.0.0.2"
    per_node = {n["NodeManagerAddress"]: n for n in ray.nodes()}
    assert per_node["127.0.0.2"]["ObjectStoreUsedBytes"] > 50 * MB
    assert per_node["127.0.0.3"]["ObjectStoreUsedBytes"] == 0


def test_a_result_whose_node_died_is_made_again_and_a_lost_put_says_so(stores):
    ray.init(stores.address)
    blob = make.options(resources={"maker": 1}).remote(2 * MB, 3)
    [put], at = ray.get(stash.options(resources={"maker": 1}).remote(2 * MB))
    assert at == "127.0.0.2" and ray.get(put) == b"p" * (2 * MB)
    assert ray.get(inspect.options(resources={"reader": 1}).remote(blob, 3))[2] == "127.0.0.2"
    # The only node with "maker" goes, and one that has it joins: the task runs again there.
    stores.kill("127.0.0.2")
    stores.add_node("127.0.0.4", cpus=1, resources={"maker": 1})
    data, made = ray.get(blob, timeout=60)
    assert data == bytes([3]) * (2 * MB) and made == "127.0.0.4"
    del data
    # The put died with its worker (and node): only task results are made again.
    with pytest.raises(ObjectLostError, match="gone with its owner") as lost:
        ray.get(put, timeout=60)
    # One sentence naming the object and what went: not a tuple, no empty task name.
    assert str(lost.value).startswith(f"object {put.id:#x} is gone with its owner"), lost.value
    assert "cannot run" not in str(lost.value) and str(lost.value) == lost.value.args[0]


def test_runtime_errors_print_their_message_alone_and_keep_it_when_pickled():
    import pickle

    from sunray import exceptions

    for cls in ("ObjectLostError", "NodeDiedError", "WorkerCrashedError", "ActorDiedError"):
        e = exceptions._from_runtime(cls, "object 0x1 is gone", "", "node 3", "K")
        assert str(e) == "object 0x1 is gone", (cls, str(e))
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.location == "node 3"


@pytest.mark.parametrize("size", [1000, 2 * MB])
def test_refs_passed_inside_values_keep_their_objects(stores, size):
    """Inline (small) and stored (large) objects alike."""
    ray.init(stores.address)
    # Made by a task's put, returned inside a list: the worker's own ref is gone.
    [put], _ = ray.get(stash.options(resources={"maker": 1}).remote(size))
    assert ray.get(put) == b"p" * size
    # Passed inside a list to a task, then dropped here before the task reads it.
    mine = ray.put(b"m" * size)
    go = stores.tmp / f"go-{size}"
    reading = read_nested.options(resources={"reader": 1}).remote([mine], str(go))
    del mine
    ray.get(make.options(resources={"maker": 1}).remote(1, 0))  # releases are flushed
    go.write_text("")
    assert ray.get(reading, timeout=60) == [size]
