"""Actors through the Python front end, against the installed wheel: ``@ray.remote`` on
a class, handles, ordering, resources, restarts, names, detached lifetime, kill."""

from __future__ import annotations

import os
import time

import pytest

import sunray as ray
from sunray.exceptions import ActorDiedError, TaskError


@ray.remote
class Counter:
    def __init__(self, start=0, *, step=1):
        self.n = start
        self.step = step
        self.seen = []

    def incr(self, by=None):
        self.n += self.step if by is None else by
        self.seen.append(by)
        return self.n

    def seen_calls(self):
        return self.seen

    def where(self):
        ctx = ray.get_runtime_context()
        return (
            ctx.get_node_ip(),
            os.getpid(),
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            ctx.get_actor_id(),
        )

    def boom(self):
        raise KeyError("no such key 99")

    def die(self):
        os._exit(5)

    @ray.method(num_returns=2)
    def pair(self):
        return self.n, -self.n

    def slow_incr(self, seconds, marker):
        with open(marker, "a") as f:
            f.write(ray.get_runtime_context().get_node_ip() + "\n")
        time.sleep(seconds)
        return self.incr(1)


def test_state_persists_calls_keep_order_and_errors_keep_their_class(local):
    c = Counter.remote(10, step=2)
    refs = [c.incr.remote(i) for i in range(100)]
    assert ray.get(refs) == [10 + i * (i + 1) // 2 for i in range(100)]
    assert ray.get(c.seen_calls.remote()) == list(range(100))
    assert ray.get(c.incr.remote()) == 10 + 4950 + 2  # the kwarg of the constructor
    with pytest.raises(KeyError, match="no such key 99") as info:
        ray.get(c.boom.remote())
    assert isinstance(info.value, TaskError)
    # A method's exception is that call's; the actor lives on.
    a, b = c.pair.remote()
    assert ray.get([a, b]) == [4962, -4962]
    with pytest.raises(AttributeError, match="no method 'nope'"):
        c.nope.remote()
    with pytest.raises(TypeError, match="instantiated directly"):
        Counter()


def test_an_actor_holds_its_cpu_and_gpu_and_frees_them_when_killed(tmp, monkeypatch):
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    monkeypatch.delenv("SUNRAY_ADDRESS", raising=False)
    ray.init(num_cpus=2, num_gpus=2)
    try:
        c = Counter.options(num_cpus=1, num_gpus=1).remote()
        _, _, cvd, actor_id = ray.get(c.where.remote())
        assert cvd == "0" and actor_id is not None
        assert ray.available_resources() == {"CPU": 1.0, "GPU": 1.0}
        ray.kill(c)
        with pytest.raises(ActorDiedError, match="Counter"):
            ray.get(c.incr.remote())
        deadline = time.monotonic() + 10
        while ray.available_resources() != {"CPU": 2.0, "GPU": 2.0}:
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.02)
    finally:
        ray.shutdown()


def test_a_crashed_actor_restarts_and_its_cut_short_call_is_retried(local):
    c = Counter.options(max_restarts=1).remote(5)
    _, pid1, _, _ = ray.get(c.where.remote())
    with pytest.raises(ActorDiedError, match="exit code 5"):
        ray.get(c.die.remote())
    # Restarted: the constructor ran again, in a new process.
    assert ray.get(c.incr.remote(1)) == 6
    _, pid2, _, _ = ray.get(c.where.remote())
    assert pid1 != pid2
    with pytest.raises(ActorDiedError):
        ray.get(c.die.remote())
    with pytest.raises(ActorDiedError, match="dead"):
        ray.get(c.incr.remote(1))
    states = [a["state"] for a in ray._sunray.actors()]
    assert states == ["DEAD"]


def test_an_actor_on_a_killed_node_restarts_on_another(cluster):
    ray.init(cluster.address)
    marker = cluster.tmp / "slow-started"
    c = Counter.options(num_cpus=2, max_restarts=-1, max_task_retries=-1).remote()
    r = c.slow_incr.remote(3, str(marker))
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text()):
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.02)
    first = marker.read_text().split()[0]
    cluster.kill(first)
    # The call its death cut short runs again on the restarted actor (fresh state).
    assert ray.get(r, timeout=60) == 1
    ip, _, _, _ = ray.get(c.where.remote())
    assert ip != first
    (a,) = ray._sunray.actors()
    assert a["state"] == "ALIVE" and a["num_restarts"] == 1


def _traffic(pid):
    """Bytes the process read and wrote through system calls (sockets included)."""
    with open(f"/proc/{pid}/io") as f:
        return sum(int(v) for k, v in (line.split() for line in f) if k in ("rchar:", "wchar:"))


@ray.remote
class Sink:
    def __init__(self):
        self.n = 0

    def take(self, blob):
        self.n += 1
        return self.n, len(blob)


@ray.remote
def count_of(pair):
    return pair[0]


@ray.remote
def first_count(pairs):
    return ray.get(pairs[0])[0]


def test_actor_calls_go_to_the_actors_node_without_the_head(cluster):
    ray.init(cluster.address)
    sink = Sink.options(num_cpus=1).remote()  # on a node, not in the head's process
    # Through the head, which then says where the actor lives.
    assert ray.get(sink.take.remote(b"")) == (1, 0)
    head = cluster.procs["head"].pid
    before = _traffic(head)
    blob = b"x" * 1024
    for i in range(500):
        assert ray.get(sink.take.remote(blob)) == (i + 2, 1024)
    refs = [sink.take.remote(blob) for _ in range(500)]
    ready, _ = ray.wait(refs, num_returns=500, timeout=60)
    assert len(ready) == 500
    assert [n for n, _ in ray.get(refs)] == list(range(502, 1002)), "in order"
    # 1,000 calls carried 1 MB of arguments; through the head, 2 MB of its traffic.
    moved = _traffic(head) - before
    assert moved < 256 * 1024, f"the head moved {moved} bytes"
    # Their results are known here only until passed on: to a task, or inside a value.
    last = sink.take.remote(blob)
    assert ray.get(count_of.remote(last)) == 1002
    assert ray.get(first_count.remote([sink.take.remote(blob)])) == 1003
    del last, refs


def test_a_detached_named_actor_outlives_its_driver(cluster):
    r = cluster.python(
        """
        import sunray as ray
        ray.init()

        @ray.remote
        class Keeper:
            def __init__(self):
                self.items = []
            def add(self, x):
                self.items.append(x)
                return len(self.items)

        k = Keeper.options(name="keeper", lifetime="detached").remote()
        print("ADDED", ray.get(k.add.remote("a")))
        try:
            Keeper.options(name="keeper").remote()
            ray.get(Keeper.options(name="keeper").remote().add.remote("b"))
        except Exception as e:
            print("DUPLICATE", type(e).__name__, e)
        same = Keeper.options(name="keeper", get_if_exists=True).remote()
        print("SAME", same == k)
        """
    )
    assert "ADDED 1" in r.stdout, r.stdout + r.stderr
    assert "exists already" in r.stdout, r.stdout
    assert "SAME True" in r.stdout, r.stdout
    ray.init(cluster.address)
    k = ray.get_actor("keeper")
    assert ray.get(k.add.remote("c")) == 2, "it kept its state after its driver left"
    ray.kill(k)
    deadline = time.monotonic() + 10
    while True:
        try:
            ray.get_actor("keeper")
        except ValueError:
            break
        assert time.monotonic() < deadline, "the killed actor's name stayed taken"
        time.sleep(0.02)


def test_a_failing_constructor_fails_its_calls_clearly(local):
    @ray.remote
    class Picky:
        def __init__(self, ok):
            if not ok:
                raise ValueError("refused at birth")

        def ping(self):
            return "pong"

    with pytest.raises(ActorDiedError, match="refused at birth"):
        ray.get(Picky.remote(False).ping.remote())
    assert ray.get(Picky.remote(True).ping.remote()) == "pong"


def test_bad_actor_options_are_refused():
    with pytest.raises(ValueError, match="max_restarts"):
        Counter.options(max_restarts=-5)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(TypeError, match="unsupported actor options"):
        Counter.options(colour="red")


@ray.remote
class Strict:
    def __init__(self, start, *, step=1):
        self.total = start
        self.step = step

    def add(self, x, y=0):
        self.total += (x + y) * self.step
        return self.total

    @staticmethod
    def twice(x):
        return 2 * x

    @classmethod
    def kind(cls, suffix):
        return cls.__name__ + suffix


@ray.remote
def call_badly(handle):
    """A method call with an argument missing, from a task holding a passed handle."""
    try:
        handle.add.remote()
    except TypeError as e:
        return str(e)
    return "no TypeError"


def test_constructor_and_method_arguments_are_checked_at_remote(local):
    """As Ray: a call that does not fit raises TypeError at .remote(), not in the actor."""
    with pytest.raises(
        TypeError, match=r"Strict\.remote\(\): missing a required argument: 'start'"
    ):
        Strict.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Strict.options(num_cpus=0).remote(1, 2)
    a = Strict.remote(1, step=2)
    with pytest.raises(
        TypeError, match=r"Strict\.add\.remote\(\): missing a required argument: 'x'"
    ):
        a.add.remote()
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        a.add.remote(1, z=2)
    with pytest.raises(TypeError, match="too many positional arguments"):
        a.twice.remote(1, 2)
    with pytest.raises(TypeError, match="missing a required argument: 'suffix'"):
        a.kind.options(num_returns=1).remote()
    # self (and cls) are not the caller's to give; static methods have none.
    assert ray.get(a.add.remote(1, y=2)) == 7
    assert ray.get([a.twice.remote(3), a.kind.remote("!")]) == [6, "Strict!"]
    # A handle passed to a task checks there too.
    assert "missing a required argument: 'x'" in ray.get(call_badly.remote(a))


def test_handles_pass_to_tasks_and_actors_call_tasks(local):
    c = Counter.remote()

    @ray.remote
    def bump(handle, times):
        return [ray.get(handle.incr.remote(1)) for _ in range(times)][-1]

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    class Caller:
        def squares(self, n):
            return ray.get([square.remote(i) for i in range(n)])

    finals = ray.get([bump.remote(c, 20), bump.remote(c, 20)])
    assert max(finals) == 40 and ray.get(c.incr.remote(0)) == 40
    assert ray.get(Caller.remote().squares.remote(5)) == [0, 1, 4, 9, 16]


def test_placement_groups_place_bundles_and_their_tasks(tmp, monkeypatch):
    from conftest import Cluster
    from sunray.util import placement_group, placement_group_table, remove_placement_group
    from sunray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    for k in ("SUNRAY_ADDRESS", "SUNRAY_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    c = Cluster(tmp)
    c.start_head()
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        c.add_node(ip, cpus=2)
    try:
        ray.init(c.address)

        @ray.remote(num_cpus=1)
        def where():
            return ray.get_runtime_context().get_node_ip()

        def ips(pg, n):
            return ray.get(
                [
                    where.options(
                        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)
                    ).remote()
                    for i in range(n)
                ]
            )

        pack = placement_group([{"CPU": 1}] * 2, strategy="PACK")
        assert pack.wait(10)
        a, b = ips(pack, 2)
        assert a == b
        remove_placement_group(pack)
        spread = placement_group([{"CPU": 2}] * 3, strategy="STRICT_SPREAD")
        ray.get(spread.ready(), timeout=10)
        assert sorted(ips(spread, 3)) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        keeper = Counter.options(
            num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(spread, 0)
        ).remote()
        assert ray.get(keeper.incr.remote(1)) == 1
        table = placement_group_table(spread)
        assert table["state"] == "CREATED" and table["strategy"] == "STRICT_SPREAD"
        remove_placement_group(spread)
        with pytest.raises(ActorDiedError, match="placement group"):
            ray.get(keeper.incr.remote(1))
        never = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
        assert not never.wait(1)
        with pytest.raises(ray.exceptions.GetTimeoutError):
            ray.get(never.ready(), timeout=0.5)
        row = placement_group_table(never)
        assert row["state"] == "PENDING" and "needs 4 nodes" in row["reason"], row
        with pytest.raises(ValueError, match="strategy"):
            placement_group([{"CPU": 1}], strategy="SIDEWAYS")
    finally:
        ray.shutdown()
        c.stop()


def _state_becomes(pg, state, timeout=30):
    """The group's row once the head reports ``state`` (a node's death reaches the head
    as its connection closing; this polls the head's table for what it decided)."""
    from sunray.util import placement_group_table

    deadline = time.monotonic() + timeout
    while (row := placement_group_table(pg))["state"] != state:
        assert time.monotonic() < deadline, row
        time.sleep(0.05)
    return row


def test_a_placement_group_whose_node_dies_places_that_bundle_again(tmp, monkeypatch):
    from conftest import started
    from sunray.util import placement_group
    from sunray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as In

    nodes = [(ip, {}) for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")]
    gen = started(tmp, monkeypatch, nodes)
    c = next(gen)
    try:
        ray.init(c.address)
        pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        ray.get(pg.ready(), timeout=10)
        keeper = Counter.options(num_cpus=1, max_restarts=2, scheduling_strategy=In(pg, 0)).remote()
        other = Counter.options(num_cpus=1, scheduling_strategy=In(pg, 1)).remote()
        first = ray.get(keeper.where.remote())[0]
        stays = ray.get(other.where.remote())[0]
        assert first != stays and ray.get(other.incr.remote(5)) == 5
        c.kill(first)
        # Bundle 0 goes to the one node the group does not use; its actor restarts there,
        # and the actor of bundle 1 lives on.
        moved = ray.get(keeper.where.remote(), timeout=60)[0]
        assert moved not in (first, stays)
        assert ray.get(other.incr.remote(1)) == 6
        assert _state_becomes(pg, "CREATED")["bundles_to_node_id"]
        # No node outside the group is left: the bundle waits until one joins.
        c.kill(moved)
        row = _state_becomes(pg, "RESCHEDULING")
        assert "left the cluster" in row["reason"], row
        c.add_node("127.0.0.5", cpus=1)
        assert ray.get(keeper.where.remote(), timeout=60)[0] == "127.0.0.5"
        assert _state_becomes(pg, "CREATED")
        assert ray.get(other.incr.remote(1)) == 7
    finally:
        next(gen, None)


def test_a_threaded_actor_runs_its_calls_at_once(local):
    import threading

    @ray.remote
    class Meeting:
        def __init__(self, n, timeout=20):
            self.barrier = threading.Barrier(n, timeout=timeout)

        def arrive(self, i):
            # Returns only once all n calls are inside this method at the same time.
            self.barrier.wait()
            return i

    m = Meeting.options(max_concurrency=4).remote(4)
    assert sorted(ray.get([m.arrive.remote(i) for i in range(4)], timeout=60)) == [0, 1, 2, 3]
    # One at a time, the same meeting can never happen: the first call times out.
    one = Meeting.remote(2, timeout=1)
    with pytest.raises(threading.BrokenBarrierError):
        ray.get([one.arrive.remote(0), one.arrive.remote(1)], timeout=60)


@ray.remote
class Gathering:
    """An async actor: its coroutines share one event loop."""

    def __init__(self):
        self.barrier = None

    async def meet(self, n):
        import asyncio
        import threading

        if self.barrier is None:
            self.barrier = asyncio.Barrier(n)
        await asyncio.wait_for(self.barrier.wait(), 30)
        return threading.get_ident()

    async def twice(self, refs):
        return 2 * await refs[0]

    def plain(self):
        return "sync methods still work"


def test_an_async_actor_runs_its_coroutines_at_once_on_one_loop_and_awaits_refs(local):
    a = Gathering.remote()
    # Four calls wait for each other at a barrier: only coroutines running at once pass.
    threads = ray.get([a.meet.remote(4) for _ in range(4)], timeout=60)
    assert len(set(threads)) == 1, "all on the actor's event loop"
    assert ray.get(a.twice.remote([ray.put(21)]), timeout=60) == 42
    assert ray.get(a.plain.remote()) == "sync methods still work"


def test_a_detached_placement_group_outlives_its_driver_until_removed(cluster):
    from sunray.util import get_placement_group, placement_group_table, remove_placement_group
    from sunray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    made = cluster.python(
        """
        import sunray as ray
        from sunray.util import placement_group
        ray.init()
        pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD", name="keep",
                             lifetime="detached")
        assert pg.wait(30)
        print("PLACED")
        """
    )
    assert made.returncode == 0 and "PLACED" in made.stdout, made.stderr
    ray.init(cluster.address)
    pg = get_placement_group("keep")
    assert ray.get(pg.ready(), timeout=10) is None, "its ready object lives on too"
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["detached"], row

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_ip()

    ips = ray.get(
        [
            where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i)).remote()
            for i in range(2)
        ]
    )
    assert sorted(ips) == ["127.0.0.2", "127.0.0.3"]
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    with pytest.raises(ValueError, match="no placement group named 'keep'"):
        get_placement_group("keep")
