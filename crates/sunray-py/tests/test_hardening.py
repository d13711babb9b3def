"""What a task may not do to its host or its cluster: read the cluster token, or exhaust
the host with a recursion of tasks that wait for their children."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading

import sunray as ray


def test_tasks_never_see_the_cluster_token(cluster, tmp, capfd):
    # The nodes' workers are started ahead of any driver (adopted by this one) and for
    # it; a task reads its environment, /proc and a child's environment, prints it,
    # and still submits tasks and reads objects (with its job's credential).
    tokens = {p.read_text().strip() for p in tmp.rglob("token")}
    assert len(tokens) == 1, tokens
    token = tokens.pop()
    assert len(token) >= 16
    ray.init(cluster.address)

    @ray.remote
    def inner(x):
        return x * 2

    @ray.remote
    def look():
        import os

        env = "\n".join(f"{k}={v}" for k, v in os.environ.items())
        with open("/proc/self/environ", "rb") as f:
            proc = f.read().decode(errors="replace")
        child = subprocess.run(["env"], capture_output=True, text=True, check=True).stdout
        print(env)
        big = ray.put(bytes(300_000))  # kept in this node's store
        return env, proc, child, ray.get(inner.remote(21)), len(ray.get(big))

    seen = ray.get([look.remote() for _ in range(4)])
    out = capfd.readouterr()
    for env, proc, child, nested, size in seen:
        assert (nested, size) == (42, 300_000)
        assert "SUNRAY_WORKER_ID=" in env
        for what, text in (("environ", env), ("/proc", proc), ("child", child)):
            assert token not in text, what
            assert "SUNRAY_WORKER_TOKEN" not in text, what
    assert "SUNRAY_WORKER_ID=" in out.out + out.err
    assert token not in out.out + out.err
    # Every value a task saw fails as a cluster token.
    values = sorted({line.split("=", 1)[1] for line in seen[0][0].splitlines() if "=" in line})
    values = [v for v in values if len(v) >= 16]
    r = cluster.python(
        """
        import os
        import sys
        import sunray as ray
        from sunray.exceptions import AuthenticationError
        for v in sys.argv[1:]:
            try:
                ray.init(os.environ["SUNRAY_ADDRESS"], _token=v)
            except AuthenticationError:
                continue
            print("ACCEPTED", v)
        print("DONE")
        """,
        *values,
    )
    assert r.stdout.strip().endswith("DONE") and "ACCEPTED" not in r.stdout, r.stdout + r.stderr


def test_a_recursion_deeper_than_the_cap_is_reported_and_does_not_exhaust_the_host(tmp):
    # rec(10_000) holds one blocked worker per level: past the cap the next level waits
    # for a worker, and the driver is told why nothing progresses.
    script = tmp / "rec.py"
    script.write_text(
        textwrap.dedent(
            """
            import sunray as ray
            ray.init(num_cpus=2)

            @ray.remote
            def rec(n):
                return 0 if n == 0 else ray.get(rec.remote(n - 1)) + 1

            ref = rec.remote(10_000)
            print("SUBMITTED", flush=True)
            ray.get(ref)
            """
        )
    )
    env = {"SUNRAY_TMPDIR": str(tmp), "SUNRAY_MAX_BLOCKED_WORKERS": "12", "PATH": "/usr/bin:/bin"}
    p = subprocess.Popen(
        [sys.executable, "-u", str(script)], env=env, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(180, p.kill)
    watchdog.start()
    try:
        warning = next((line for line in p.stderr if "cannot progress" in line), "")
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
    finally:
        watchdog.cancel()
        p.kill()
        p.wait()
    blocked = re.search(r"(\d+) tasks are blocked in get\(\) or wait\(\) on node", warning)
    assert blocked, warning
    assert "with 12 of this job's workers blocked the node starts no more" in warning
    assert "SUNRAY_MAX_BLOCKED_WORKERS" in warning
    # The cap, and at most the node's ordinary pool (4 workers for 2 CPUs) besides,
    # which idle workers may fill.
    assert 12 <= int(blocked[1]) <= len(children) <= 12 + 4, (warning, children)
