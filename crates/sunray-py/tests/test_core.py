"""Ray's core API from Python, on sunray: one test per behaviour a Ray user relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import sunray
import sunray as ray
from sunray.exceptions import (
    AuthenticationError,
    GetTimeoutError,
    TaskError,
    WorkerCrashedError,
)


@ray.remote
def add(a, b=10, *, c=100):
    return a + b + c


@ray.remote
def identity(x):
    return x


@ray.remote
def where():
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_node_ip(), os.getpid()


def test_args_and_kwargs(local):
    assert ray.get(add.remote(1)) == 111
    assert ray.get(add.remote(1, 2)) == 103
    assert ray.get(add.remote(1, b=2, c=3)) == 6
    assert ray.get([add.remote(i, c=0) for i in range(5)]) == [10, 11, 12, 13, 14]


def test_a_lambda_and_a_closure_run_remotely(local):
    k = 7
    times_k = ray.remote(lambda x: x * k)
    assert ray.get(times_k.remote(6)) == 42


def test_top_level_refs_are_resolved_and_nested_ones_stay_refs(local):
    r = ray.put(5)
    assert ray.get(add.remote(r, r, c=r)) == 15
    assert ray.get(add.remote(identity.remote(1), 1, c=1)) == 3

    @ray.remote
    def kinds(xs, d):
        return [type(x).__name__ for x in xs], type(d["k"]).__name__, xs[0].hex()

    names, dk, hexed = ray.get(kinds.remote([r], {"k": r}))
    assert names == ["ObjectRef"] and dk == "ObjectRef" and hexed == r.hex()


def test_wait_with_num_returns_and_timeout(local):
    @ray.remote
    def sleep(s):
        time.sleep(s)
        return s

    fast = [sleep.remote(0) for _ in range(2)]
    slow = sleep.remote(30)
    ray.get(fast)
    ready, not_ready = ray.wait([slow, *fast], num_returns=2)
    assert ready == fast and not_ready == [slow]
    ready, not_ready = ray.wait([slow, *fast], num_returns=1)
    assert len(ready) == 1 and len(not_ready) == 2
    t = time.monotonic()
    ready, not_ready = ray.wait([slow], timeout=0.3)
    took = time.monotonic() - t
    assert ready == [] and not_ready == [slow]
    assert 0.25 < took < 5
    with pytest.raises(GetTimeoutError):
        ray.get(slow, timeout=0.2)
    with pytest.raises(ValueError):
        ray.wait([slow, slow])


def test_wait_of_no_refs_returns_two_empty_lists(local):
    """As Ray: nothing to wait for is not an error, whatever num_returns says."""
    assert ray.wait([]) == ([], [])
    assert ray.wait([], num_returns=1, timeout=0) == ([], [])


def test_get_and_wait_of_something_else_than_refs_name_its_type_and_value(local):
    """A string is one wrong argument, not a list of one-letter ones (Ray's classes:
    ValueError for get's argument, TypeError for wait's and for what a list holds)."""
    with pytest.raises(
        ValueError, match=r"ObjectRef or a list of ObjectRefs, got str: 'not a ref'"
    ):
        ray.get("not a ref")
    with pytest.raises(ValueError, match="got int: 42"):
        ray.get(42)
    with pytest.raises(TypeError, match="got int: 1$"):
        ray.get([ray.put(0), 1])
    with pytest.raises(TypeError, match="list of ObjectRefs, got str: 'abc'"):
        ray.wait("abc")
    with pytest.raises(TypeError, match="got a single ObjectRef"):
        ray.wait(ray.put(0))
    r = ray.put(7)
    assert ray.get((r, r)) == [7, 7]


def test_arguments_that_do_not_fit_the_signature_raise_type_error_at_remote(local):
    """As Ray: checked when the call is made, not later in a worker."""
    with pytest.raises(TypeError, match=r"add\.remote\(\): missing a required argument: 'a'"):
        add.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        add.remote(1, d=4)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        add.remote(1, a=2)
    with pytest.raises(TypeError, match="missing a required argument"):
        add.options(num_cpus=0.5).remote()
    with pytest.raises(TypeError, match="takes no arguments|too many positional"):
        ray.remote(lambda: 1).remote(1)
    # What fits still runs; a ref counts as the argument it names.
    assert ray.get(add.remote(ray.put(1), c=0)) == 11
    assert ray.get(ray.remote(lambda *a, **k: (a, k)).remote(1, x=2)) == ((1,), {"x": 2})


def test_put_and_get_of_a_large_numpy_array(local):
    a = np.random.default_rng(1).random((2000, 2500))  # 40 MB
    r = ray.put(a)
    b = ray.get(r)
    assert np.array_equal(a, b)
    assert not b.flags.writeable  # a view of the received buffer, as Ray's zero-copy get

    @ray.remote
    def stats(x):
        return x.shape, float(x.sum()), x.dtype.str

    shape, total, dtype = ray.get(stats.remote(r))
    assert shape == a.shape and total == pytest.approx(a.sum()) and dtype == a.dtype.str
    twice = ray.get(ray.remote(lambda x: x * 2).remote(a))
    assert np.array_equal(twice, a * 2)


def test_num_returns_gives_one_ref_per_value(local):
    @ray.remote(num_returns=2)
    def pair(x):
        return x, x * 2

    a, b = pair.remote(3)
    assert ray.get(b) == 6 and ray.get(a) == 3
    assert ray.get(add.remote(a, b, c=0)) == 9
    c, d = pair.options(num_returns=2).remote(1)
    assert ray.get([c, d]) == [1, 2]
    # The refs of one task's returns are distinct refs to wait() (ready together).
    assert ray.wait([c, d], num_returns=2, timeout=30) == ([c, d], [])
    with pytest.raises(ValueError, match="unique"):
        ray.wait([c, c])

    @ray.remote(num_returns=3)
    def wrong():
        return 1, 2

    x, _, _ = wrong.remote()
    with pytest.raises(ValueError, match="num_returns=3"):
        ray.get(x)


def test_options_override_per_call(local):
    @ray.remote(num_cpus=1)
    def visible():
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    assert ray.get(visible.options(num_cpus=0.5).remote()) == ""
    with pytest.raises(ValueError, match="num_cpus"):
        visible.options(num_cpus=-1)
    with pytest.raises(TypeError, match="unsupported"):
        visible.options(bogus=1)
    with pytest.raises(TypeError, match="cannot be called directly"):
        visible()


def _max_overlap(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def test_never_more_concurrent_tasks_than_cpus(cluster):
    ray.init(cluster.address)

    @ray.remote
    def span():
        s = time.time()
        time.sleep(0.2)
        return s, time.time()

    @ray.remote(num_cpus=2)
    def wide():
        s = time.time()
        time.sleep(0.2)
        return s, time.time()

    spans = ray.get([span.remote() for _ in range(12)])
    assert _max_overlap(spans) == 4  # 2 nodes x 2 CPUs, all used
    spans = ray.get([wide.remote() for _ in range(6)])
    assert _max_overlap(spans) == 2


def test_fake_gpus_are_assigned_without_overlap(tmp, monkeypatch):
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    ray.init(num_cpus=4, num_gpus=2)
    try:

        @ray.remote(num_gpus=1)
        def gpu():
            s = time.time()
            time.sleep(0.3)
            ids = ray.get_gpu_ids()
            return os.environ["CUDA_VISIBLE_DEVICES"], ids, s, time.time()

        out = ray.get([gpu.remote() for _ in range(6)])
        for visible, ids, _, _ in out:
            assert visible in ("0", "1") and ids == [int(visible)]
        for i, (v1, _, s1, e1) in enumerate(out):
            for v2, _, s2, e2 in out[i + 1 :]:
                if s1 < e2 and s2 < e1:
                    assert v1 != v2, out
        assert _max_overlap([(s, e) for _, _, s, e in out]) == 2
        assert ray.cluster_resources()["GPU"] == 2
    finally:
        ray.shutdown()


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(f"custom failure {code}")
        self.code = code


def test_an_exception_keeps_its_class_and_traceback(local):
    @ray.remote
    def fails(n):
        def deeper():
            raise KeyError(f"missing {n}")

        deeper()

    with pytest.raises(KeyError) as info:
        ray.get(fails.remote(3))
    e = info.value
    assert isinstance(e, TaskError) and isinstance(e, ray.exceptions.RayTaskError)
    assert "deeper" in e.traceback_str and "missing 3" in str(e)
    assert e.function_name.endswith("fails") and e.pid != os.getpid()
    assert e.node_ip == "127.0.0.1"

    @ray.remote
    def custom():
        raise CustomError(42)

    with pytest.raises(CustomError) as info:
        ray.get(custom.remote())
    assert info.value.code == 42
    # A task that takes a failed result fails with the same error.
    with pytest.raises(KeyError):
        ray.get(identity.remote(fails.remote(4)))


def test_retry_exceptions_reruns_a_failing_task(local, tmp):
    marker = tmp / "attempts"

    @ray.remote(max_retries=2, retry_exceptions=[OSError])
    def flaky():
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        if n < 2:
            raise OSError("not yet")
        return n

    assert ray.get(flaky.remote()) == 2


def test_a_worker_killed_mid_task_is_retried(local, tmp):
    marker = tmp / "died-once"

    @ray.remote(max_retries=1)
    def dies_once():
        if not marker.exists():
            marker.write_text("x")
            os._exit(1)
        return "second attempt"

    assert ray.get(dies_once.remote()) == "second attempt"

    @ray.remote(max_retries=0)
    def always_dies():
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(WorkerCrashedError) as info:
        ray.get(always_dies.remote())
    msg = str(info.value)
    assert "always_dies" in msg and "node 1 (127.0.0.1)" in msg


def test_a_node_killed_mid_task_is_retried_elsewhere(cluster):
    ray.init(cluster.address)
    started = cluster.tmp / "started"

    @ray.remote(max_retries=1)
    def slow():
        ip = ray.get_runtime_context().get_node_ip()
        with open(started, "a") as f:
            f.write(ip + "\n")
        time.sleep(3)
        return ip

    r = slow.remote()
    deadline = time.monotonic() + 20
    while not (started.exists() and started.read_text()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    first = started.read_text().split()[0]
    cluster.kill(first)
    second = ray.get(r, timeout=30)
    assert second != first and second in ("127.0.0.2", "127.0.0.3")
    alive = {n["NodeManagerAddress"]: n["Alive"] for n in ray.nodes()}
    assert alive[first] is False and alive[second] is True


def test_tasks_spread_over_the_nodes(cluster):
    ray.init(cluster.address)

    @ray.remote
    def slow_where():
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_ip()

    ips = ray.get([slow_where.remote() for _ in range(4)])
    assert sorted(ips) == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]


def test_nodes_have_rays_keys(cluster):
    ray.init(cluster.address)
    ns = ray.nodes()
    assert len(ns) == 3
    for n in ns:
        assert {"NodeID", "Alive", "NodeManagerAddress", "NodeManagerHostname", "Resources"} <= set(
            n
        )
        assert n["Alive"] is True
    by_ip = {n["NodeManagerAddress"]: n for n in ns}
    assert by_ip["127.0.0.2"]["Resources"] == {"CPU": 2.0}
    assert ray.cluster_resources() == {"CPU": 4.0}
    assert ray.available_resources()["CPU"] == 4.0
    node_id, ip, pid = ray.get(where.remote())
    assert node_id in {n["NodeID"] for n in ns} and ip in by_ip and pid != os.getpid()


def test_a_wrong_token_is_refused_clearly(cluster):
    with pytest.raises(AuthenticationError) as info:
        ray.init(cluster.address, _token="w" * 64)
    assert "token" in str(info.value)
    assert not ray.is_initialized()


def test_an_unreachable_head_is_a_clear_error(tmp, monkeypatch):
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    with pytest.raises(ray.exceptions.ClusterConnectionError) as info:
        ray.init("127.0.0.1:1", _token="t" * 64)
    assert "127.0.0.1:1" in str(info.value)


def test_init_auto_joins_the_cluster_on_this_host(cluster):
    ray.init("auto")
    assert len(ray.nodes()) == 3


def test_shutdown_then_init_again(tmp, monkeypatch):
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    for _ in range(3):
        ray.init(num_cpus=1)
        assert ray.get(add.remote(0)) == 110
        with pytest.raises(ray.exceptions.SunrayError, match="already"):
            ray.init()
        ray.shutdown()
        assert not ray.is_initialized()
    # Every embedded cluster removed its session directory.
    assert [p.name for p in (tmp / f"sunray-{os.getuid()}").iterdir()] == []


def test_ctrl_c_in_get_raises_keyboard_interrupt_promptly(cluster):
    p = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-c",
            (
                # Python makes SIGINT a KeyboardInterrupt only if it starts at its
                # default; a test run from the background of a shell without job
                # control (as a CI runner may be) passes it on ignored.
                "import signal, sunray, time\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "sunray.init()\n"
                "r = sunray.remote(lambda: time.sleep(60)).remote()\n"
                "try:\n"
                "    print('waiting', flush=True)\n"
                "    sunray.get(r)\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n"
            ),
        ],
        env=dict(cluster.env, SUNRAY_ADDRESS=cluster.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.3)  # into get(): no event shows that from outside the process
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert time.monotonic() - t < 2, err
    assert "interrupted" in out, err


def test_task_output_reaches_the_driver_with_pid_and_ip(cluster):
    r = cluster.python(
        """
        import sunray as ray
        ray.init()
        @ray.remote
        def hello(i):
            print("hello", i)
            return i
        ray.get([hello.remote(i) for i in range(3)])
        """
    )
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if "hello" in l]
    assert len(lines) == 3, r.stdout
    for l in lines:
        assert l.startswith("(pid=") and ", ip=127.0.0." in l, l


def test_a_module_the_nodes_cannot_import_is_named(cluster, tmp):
    mod = tmp / "only_here"
    mod.mkdir()
    (mod / "helper_mod_x.py").write_text("def work():\n    return 'ok'\n")
    r = cluster.python(
        f"""
        import shutil, sys
        sys.path.insert(0, {str(mod)!r})
        import helper_mod_x
        import sunray as ray
        ray.init()
        f = ray.remote(helper_mod_x.work)
        print(ray.get(f.remote()))
        shutil.rmtree({str(mod)!r})   # the workers (new ones) can no longer import it
        ray.shutdown()
        ray.init()
        try:
            ray.get(ray.remote(helper_mod_x.work).remote())
        except ModuleNotFoundError as e:
            print("ERROR", e)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "ok"
    err = [l for l in r.stdout.splitlines() if l.startswith("ERROR")]
    assert err and "helper_mod_x" in err[0], r.stdout


def test_python_and_rust_drivers_share_a_cluster(cluster):
    rust = os.environ.get("SUNRAY_RUST_SIMPLE_TRAINER")
    if not rust or not os.path.exists(rust):
        pytest.skip(
            "SUNRAY_RUST_SIMPLE_TRAINER names no built Rust example (test.sh sets it to "
            "target/debug/examples/simple_trainer)"
        )
    rust_driver = subprocess.Popen(
        [rust, "4", "--rounds", "3"],
        env=dict(cluster.env, SUNRAY_ADDRESS=cluster.address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ray.init(cluster.address)
    ips = ray.get([where.remote() for _ in range(8)])
    out, err = rust_driver.communicate(timeout=60)
    assert rust_driver.returncode == 0, err
    assert out.count("round ") == 3, out
    assert {ip for _, ip, _ in ips} <= {"127.0.0.2", "127.0.0.3"}
    assert len(ray.nodes()) == 3


def test_the_package_is_the_installed_wheel():
    # pytest must test what pip installed, not the source tree.
    assert "site-packages" in sunray.__file__, sunray.__file__


def test_tasks_submit_tasks_and_recursion_cannot_deadlock_two_cpus(local):
    @ray.remote
    def fib(n):
        if n < 2:
            return n
        # Each task waits for the two it submits, its CPU lent to them meanwhile.
        return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

    # fib(18): 8,361 tasks, about 70 of them blocked at once on 2 CPUs, which the cap on
    # blocked workers (SUNRAY_MAX_BLOCKED_WORKERS) must leave room for.
    assert ray.get(fib.remote(18), timeout=300) == 2584

    @ray.remote
    def put_then_pass(x):
        ref = ray.put(x * 2)
        ready, _ = ray.wait([fib.remote(5), ref], num_returns=2)
        return ray.get(ref) + ray.get(ready[0]) * 0

    assert ray.get(put_then_pass.remote(21)) == 42
    # Every CPU came back.
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU") != 2.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.02)


def _children(pid: int) -> set[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], check=False, capture_output=True, text=True
    )
    return {int(p) for p in out.stdout.split()}


def test_python_workers_started_ahead_serve_the_first_tasks(cluster, tmp):
    # Each node agent (the wheel's `sunray start`) starts one Python worker per CPU
    # before any driver comes; the first tasks run on them, with the driver's module
    # path and working directory.
    agents = {ip: cluster.procs[ip].pid for ip in ("127.0.0.2", "127.0.0.3")}
    deadline = time.monotonic() + 20
    while any(len(_children(p)) < 2 for p in agents.values()):
        assert time.monotonic() < deadline, {ip: _children(p) for ip, p in agents.items()}
        time.sleep(0.05)
    ahead = set().union(*(_children(p) for p in agents.values()))
    mods = tmp / "driver_mods"
    mods.mkdir()
    (mods / "driver_only_mod.py").write_text("VALUE = 'from the driver path'\n")
    sys.path.insert(0, str(mods))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        ray.init(cluster.address)

        @ray.remote
        def probe():
            import driver_only_mod

            time.sleep(0.3)
            return os.getpid(), os.getcwd(), driver_only_mod.VALUE

        out = ray.get([probe.remote() for _ in range(4)])
    finally:
        os.chdir(cwd)
        sys.path.remove(str(mods))
    assert {pid for pid, _, _ in out} == ahead
    assert all(c == str(tmp) and v == "from the driver path" for _, c, v in out), out
