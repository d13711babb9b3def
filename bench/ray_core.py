"""Ray's figures for the same workload as examples/bench_core.rs (run by bench/core.sh --ray)."""

import os
import secrets
import statistics
import subprocess
import time

# Ray 2.59+ turns token authentication on for local clusters and then cannot join a
# second node without the token; pass one explicitly (authenticated, as sunray is).
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

import ray

PORT = "6391"
# The head on loopback with 2 CPUs, as bench_core's.
HEAD = (
    "ray",
    "start",
    "--head",
    "--port",
    PORT,
    "--node-ip-address",
    "127.0.0.1",
    "--num-cpus",
    "2",
    "--include-dashboard=false",
)


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def ray_rss_mb():
    out = subprocess.run(
        ["ps", "-eo", "rss=,args="], check=False, capture_output=True, text=True
    ).stdout
    total = 0
    for line in out.splitlines():
        rss, _, cmd = line.strip().partition(" ")
        if (
            ("ray" in cmd and "ray_core.py" not in cmd)
            or "gcs_server" in cmd
            or "raylet" in cmd
        ):
            total += int(rss)
    return total / 1024


starts = []
for _ in range(3):
    t = time.time()
    sh(*HEAD)
    starts.append(time.time() - t)
    sh("ray", "stop", "--force")
print(
    f"ray start --head to ready:          {statistics.median(starts) * 1000:8.1f} ms (median of 3)"
)

sh(*HEAD)
sh(
    "ray",
    "start",
    "--address",
    f"127.0.0.1:{PORT}",
    "--node-ip-address",
    "127.0.0.2",
    "--num-cpus",
    "2",
)
time.sleep(5)
print(f"idle RSS, head + node:              {ray_rss_mb():8.1f} MB")

ray.init(address=f"127.0.0.1:{PORT}", logging_level="ERROR")


@ray.remote
def noop():
    return None


@ray.remote
def sleep_ip(s):
    time.sleep(s)
    return ray.util.get_node_ip_address()


def summary(v, digits):
    return (
        f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})"
    )


# Five of each, as bench_core does: the median and the range.
ray.get([noop.remote() for _ in range(200)])
rates = []
for _ in range(5):
    t = time.time()
    ray.get([noop.remote() for _ in range(10_000)])
    rates.append(10_000 / (time.time() - t))
print(
    f"no-op tasks, 10,000 submitted then gathered: {summary(rates, 0)} tasks/s (median of 5, range)"
)
rtts = []
for _ in range(5):
    t = time.time()
    for _ in range(1000):
        ray.get(noop.remote())
    rtts.append((time.time() - t) * 1e3)
print(
    f"round trip, get(f.remote()) x 1,000:  {summary(rtts, 1)} us mean (median of 5, range)"
)


@ray.remote
class Idle:
    def noop(self):
        return None


a = Idle.remote()
ray.get(a.noop.remote())
rtts = []
for _ in range(5):
    t = time.time()
    for _ in range(1000):
        ray.get(a.noop.remote())
    rtts.append((time.time() - t) * 1e3)
print(
    f"actor call round trip, get(a.noop.remote()) x 1,000: {summary(rtts, 1)} us mean (median of 5, range)"
)
rates = []
for _ in range(5):
    t = time.time()
    ray.get([a.noop.remote() for _ in range(10_000)])
    rates.append(10_000 / (time.time() - t))
print(
    f"actor calls, 10,000 submitted then gathered: {summary(rates, 0)} calls/s (median of 5, range)"
)
cpus = int(ray.cluster_resources()["CPU"])
rounds = []
for _ in range(5):
    t = time.time()
    ray.get([sleep_ip.remote(1.0) for _ in range(cpus)])
    rounds.append(time.time() - t)
print(
    f"simple trainer round, {cpus} one-second tasks on 2 nodes: {statistics.median(rounds[1:]):.4f} s"
)
ray.shutdown()
sh("ray", "stop", "--force")
