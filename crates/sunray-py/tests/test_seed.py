"""The seed's own program, ``simple-trainer.py``, unchanged, with ``import ray`` resolving
to sunray: on a head and two nodes on loopback, and on the Slurm lab through
``sunray slurm run``. The file is read from the seed folder at test time."""

from __future__ import annotations

import ast
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SEED, SUNRAY

TRAINER = Path(os.environ.get("SUNRAY_SEED_DIR", SEED)) / "simple-trainer.py"
LAB = Path(__file__).resolve().parents[2] / "sunray-it" / "slurm-lab" / "lab.sh"

needs_seed = pytest.mark.skipif(
    not TRAINER.is_file(),
    reason=f"the seed's simple-trainer.py is not at {TRAINER} (set SUNRAY_SEED_DIR)",
)


def ray_shim(tmp: Path) -> Path:
    """A directory whose ``ray`` module is sunray (what ``import ray`` finds first)."""
    d = tmp / "shim"
    d.mkdir(parents=True, exist_ok=True)
    (d / "ray.py").write_text("import sys\nimport sunray\n\nsys.modules[__name__] = sunray\n")
    return d


def rounds(out: str) -> list[tuple[dict, float]]:
    """(counter, seconds) per round the trainer printed."""
    lines = out.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Counter(") and i + 1 < len(lines):
            found.append((ast.literal_eval(line[len("Counter(") : -1]), float(lines[i + 1])))
    return found


@needs_seed
def test_the_seeds_simple_trainer_runs_unchanged_on_a_head_and_two_nodes(cluster):
    shim = ray_shim(cluster.tmp)
    r = subprocess.run(
        ["python", "-u", str(TRAINER), "4"],
        check=False,
        env=dict(
            cluster.env,
            ip_head=cluster.address,
            PYTHONPATH=str(shim),
            PATH=f"{Path(SUNRAY).parent}:{os.environ['PATH']}",
        ),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cluster.tmp,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Nodes in the Ray cluster:"), r.stdout
    nodes = ast.literal_eval(r.stdout.splitlines()[1])
    assert sorted(n["NodeManagerAddress"] for n in nodes) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    found = rounds(r.stdout)
    assert len(found) == 60, r.stdout
    for counter, secs in found:
        # This host's name resolves to one address for every node: 4 answers a round.
        assert sum(counter.values()) == 4, counter
        # 4 one-second tasks on 4 CPUs of 2 nodes: one second, not two.
        assert 1.0 <= secs < 1.9, found


def lab_on(node: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LAB), "node", node, *cmd], check=False, capture_output=True, text=True
    )


def lab_jobs() -> Path:
    """The lab's shared job folder, with the lab brought up if it is not."""
    if lab_on("n1", "true").returncode != 0:
        up = subprocess.run(["bash", str(LAB), "up"], check=False, capture_output=True, text=True)
        assert up.returncode == 0, up.stdout + up.stderr
    return Path(os.environ.get("LAB_STATE", "/tmp/sunray-slurmlab")) / "jobs"


def run_lab_job(script: Path, out_dir: Path, timeout: float) -> str:
    """Submits a batch script (whose output goes to ``out_dir/sunray_%j.out``), waits
    for it to leave the queue, asserts it completed, and returns its output."""
    sub = lab_on("n1", "sbatch", "--parsable", str(script))
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = lab_on("n1", "squeue", "-h", "-j", job)
        if q.returncode == 0 and not q.stdout.strip():
            break
        time.sleep(0.5)
    out_file = out_dir / f"sunray_{job}.out"
    out = out_file.read_text() if out_file.exists() else ""
    state = lab_on("n1", "scontrol", "show", "job", job).stdout
    assert "JobState=COMPLETED" in state, out[-4000:]
    return out


@needs_seed
@pytest.mark.skipif(os.geteuid() != 0, reason="the Slurm lab needs root (network namespaces)")
def test_the_seeds_simple_trainer_runs_under_slurm_run_on_the_slurm_lab():
    jobs = lab_jobs()
    shim = ray_shim(jobs / f"py-{os.getpid()}")
    os.chmod(shim.parent, 0o755)
    script = jobs / f"py-{os.getpid()}.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=2\n"
        f"#SBATCH --output={jobs}/sunray_%j.out\n"
        f"export PATH={Path(SUNRAY).parent}:$PATH PYTHONPATH={shim}\n"
        f"sunray slurm run -- python -u {TRAINER} 4\n"
    )
    out = run_lab_job(script, jobs, timeout=240)
    found = rounds(out)
    assert len(found) == 60, out
    for counter, secs in found:
        # Each lab node has its own hostname and address: every round uses both nodes.
        assert sorted(counter.values()) == [2, 2], found
        assert all(ip.startswith("10.77.0.") for ip in counter), found
        assert 1.0 <= secs < 1.9, found
