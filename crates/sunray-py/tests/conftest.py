"""Fixtures of the Python tests. They run against the installed wheel (``./test.sh``
builds and installs it into a venv): clusters are started with that wheel's ``sunray``
command, on loopback addresses, each in a fresh ``SUNRAY_TMPDIR``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sunray

SEED = Path(__file__).resolve().parents[4] / "shared" / "seed"
SUNRAY = str(Path(sys.executable).parent / "sunray")


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, SUNRAY_TMPDIR=str(tmp))
    for k in ("SUNRAY_ADDRESS", "SUNRAY_TOKEN", "CUDA_VISIBLE_DEVICES", "ip_head"):
        env.pop(k, None)
    return env


class Cluster:
    """A head (no CPUs of its own, so that tasks go to the nodes) and node agents, each
    a ``sunray start --block`` process."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = _env(tmp)
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _start(self, name: str, args: list[str], ready: str) -> str:
        with open(self.tmp / f"{name}.err", "w") as err:
            p = subprocess.Popen(
                [SUNRAY, "start", "--block", *args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.procs[name] = p
        line = p.stdout.readline()
        assert ready in line, (
            f"{name} did not start: {line!r} {(self.tmp / f'{name}.err').read_text()}"
        )
        return line

    def start_head(self, cpus: float = 0) -> None:
        line = self._start(
            "head",
            ["--head", "--node-ip-address", "127.0.0.1", "--port", "0", "--num-cpus", str(cpus)],
            "sunray head started:",
        )
        self.address = line.split()[3]

    def add_node(
        self, ip: str, cpus: float = 2, gpus: float = 0, resources: dict | None = None
    ) -> None:
        args = ["--address", self.address, "--node-ip-address", ip, "--num-cpus", str(cpus)]
        if gpus:
            args += ["--num-gpus", str(gpus)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        self._start(ip, args, "sunray node joined")

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.kill()
        p.wait()

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def python(self, code: str, *args: str, timeout: float = 120, **kw):
        """Runs a driver script (the code, dedented) against this cluster."""
        script = self.tmp / f"driver_{len(list(self.tmp.glob('driver_*')))}.py"
        script.write_text(textwrap.dedent(code))
        env = dict(self.env, SUNRAY_ADDRESS=self.address, **kw.pop("env", {}))
        return subprocess.run(
            [sys.executable, "-u", str(script), *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
            **kw,
        )


@pytest.fixture
def tmp(tmp_path_factory) -> Path:
    # Short: Unix socket paths under it stay far below 108 bytes.
    d = Path(f"/tmp/sunray-pytest-{os.getpid()}-{len(list(Path('/tmp').glob('sunray-pytest-*')))}")
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def started(tmp, monkeypatch, nodes: list[tuple[str, dict]]):
    """A head without CPUs and nodes (ip, ``add_node`` arguments); this process's driver
    connects with ``sunray.init(c.address)``. Yields the cluster, then stops it."""
    c = Cluster(tmp)
    c.start_head()
    for ip, kw in nodes:
        c.add_node(ip, **kw)
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    for k in ("SUNRAY_ADDRESS", "SUNRAY_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    yield c
    sunray.shutdown()
    c.stop()


@pytest.fixture
def cluster(tmp, monkeypatch):
    """A head and two nodes of 2 CPUs (127.0.0.2, 127.0.0.3)."""
    yield from started(tmp, monkeypatch, [("127.0.0.2", {}), ("127.0.0.3", {})])


@pytest.fixture
def local(tmp, monkeypatch):
    """An embedded cluster of 2 CPUs in this process."""
    monkeypatch.setenv("SUNRAY_TMPDIR", str(tmp))
    monkeypatch.delenv("SUNRAY_ADDRESS", raising=False)
    sunray.init(num_cpus=2)
    yield
    sunray.shutdown()
