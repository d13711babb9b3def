"""The Python front end's figures, for sunray or for Ray (the same script, run by
bench/python.sh once per framework on the same machine): prints one JSON object.

Cluster for the task figures and the seed: 2 nodes x 2 CPUs on loopback (a head with 2
CPUs on 127.0.0.1, a node with 2 CPUs on 127.0.0.2), both frameworks alike.
"""

import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMEWORK = sys.argv[1]  # "sunray" or "ray"
SEED = Path(sys.argv[2])  # the seed's simple-trainer.py
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 10
REPEAT = 5
BIN = Path(sys.executable).parent
PY = sys.executable

if FRAMEWORK == "ray":
    # Ray 2.59+ turns token authentication on for local clusters; pass one explicitly
    # so that the second node can join (authenticated, as sunray is).
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
else:
    os.environ["SUNRAY_TMPDIR"] = tempfile.mkdtemp(prefix="sunray-bench-")
for k in ("SUNRAY_ADDRESS", "RAY_ADDRESS"):
    os.environ.pop(k, None)


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def timed_python(code: str) -> float:
    """Seconds a fresh interpreter reports for ``code`` (which prints them)."""
    return float(sh(PY, "-c", code).stdout.strip().splitlines()[-1])


def med(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


out = {"framework": FRAMEWORK}
mod = "sunray" if FRAMEWORK == "sunray" else "ray"
out["import_s"] = med(
    [
        timed_python(
            f"import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
        )
        for _ in range(REPEAT)
    ]
)
quiet = ", include_dashboard=False, logging_level='ERROR'" if FRAMEWORK == "ray" else ""
out["init_s"] = med(
    [
        timed_python(
            f"import time, {mod} as ray\n"
            f"t = time.perf_counter(); ray.init(num_cpus=2{quiet}); d = time.perf_counter() - t\n"
            "ray.shutdown(); print(d)"
        )
        for _ in range(REPEAT)
    ]
)

# The cluster: head + one node, 2 CPUs each.
cli = str(BIN / mod)
if FRAMEWORK == "ray":
    port = "6392"
    head = [cli, "start", "--head", "--port", port, "--node-ip-address", "127.0.0.1"]
    sh(*head, "--num-cpus", "2", "--include-dashboard=false")
    address = f"127.0.0.1:{port}"
    sh(
        cli,
        "start",
        "--address",
        address,
        "--node-ip-address",
        "127.0.0.2",
        "--num-cpus",
        "2",
    )
else:
    head = sh(
        cli,
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        "0",
        "--num-cpus",
        "2",
    )
    address = re.search(r"started: (\S+)", head.stdout).group(1)
    sh(
        cli,
        "start",
        "--address",
        address,
        "--node-ip-address",
        "127.0.0.2",
        "--num-cpus",
        "2",
    )
try:
    if FRAMEWORK == "ray":
        import ray

        ray.init(address=address, logging_level="ERROR")
    else:
        import sunray as ray

        ray.init(address)
    # Both nodes up before anything is timed.
    while sum(n["Alive"] for n in ray.nodes()) < 2:
        time.sleep(0.1)

    @ray.remote
    def noop():
        return None

    ray.get([noop.remote() for _ in range(200)])
    rates = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        ray.get([noop.remote() for _ in range(10_000)])
        rates.append(10_000 / (time.perf_counter() - t))
    out["tasks_per_s"] = med(rates)
    rtts = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        for _ in range(1000):
            ray.get(noop.remote())
        rtts.append((time.perf_counter() - t) * 1e3)  # ms per 1,000 = us each
    out["round_trip_us"] = med(rtts)
    ray.shutdown()

    # The seed's program, its 60 rounds cut to ROUNDS (the only change), as a new driver.
    with tempfile.TemporaryDirectory() as d:
        src = SEED.read_text().replace("range(60)", f"range({ROUNDS})")
        (Path(d) / "trainer.py").write_text(src)
        env = dict(os.environ, ip_head=address, PATH=f"{BIN}:{os.environ['PATH']}")
        if FRAMEWORK == "sunray":
            (Path(d) / "ray.py").write_text(
                "import sys, sunray\nsys.modules[__name__] = sunray\n"
            )
            env["PYTHONPATH"] = d
        t = time.perf_counter()
        run = sh(PY, "-u", str(Path(d) / "trainer.py"), "4", env=env, cwd=d)
        out["seed_wall_s"] = time.perf_counter() - t
    lines = run.stdout.splitlines()
    secs = [
        float(lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("Counter(")
    ]
    assert len(secs) == ROUNDS, run.stdout
    out["seed_first_round_s"] = secs[0]
    out["seed_steady_round_s"] = med(secs[1:])
finally:
    if FRAMEWORK == "ray":
        sh(cli, "stop", "--force")
    else:
        sh(cli, "stop")
print(json.dumps(out))
