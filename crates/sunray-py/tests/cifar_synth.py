"""A small, learnable stand-in for CIFAR-10 in torchvision's ``cifar-10-batches-py``
format (this machine cannot download the real one): each class is one of ten
well-separated colours, each image that colour plus 15 % noise."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write(root: Path, train: int = 4000, test: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    levels = (0, 128, 255)
    palette = np.array(
        [[r, g, b] for r in levels for g in levels for b in levels], dtype=np.float32
    )
    colours = palette[[0, 2, 6, 8, 18, 20, 24, 26, 13, 4]].reshape(10, 3, 1, 1)
    templates = np.broadcast_to(colours, (10, 3, 32, 32)).reshape(10, 3072)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(0, 256, size=(n, 3072)).astype(np.float32)
        data = (0.85 * templates[labels] + 0.15 * noise).astype(np.uint8)
        return {b"data": data, b"labels": labels.tolist()}

    per = train // 5
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per)))
    (d / "test_batch").write_bytes(pickle.dumps(batch(test)))
    return root


# The seed's load_data, pointed at the local set (the rest of the script is unchanged):
# the same transforms over the same format, read without torchvision's download check.
LOAD_DATA = """
def load_data(data_dir="./data"):
    import pickle as _pickle
    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    ])
    root = os.path.join(os.environ["SUNRAY_TEST_CIFAR"], "cifar-10-batches-py")

    class _Set(torch.utils.data.Dataset):
        def __init__(self, files):
            xs, ys = [], []
            for f in files:
                with open(os.path.join(root, f), "rb") as fh:
                    b = _pickle.load(fh, encoding="bytes")
                xs.append(b[b"data"]); ys += b[b"labels"]
            self.x = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            self.y = ys
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            return transform(self.x[i]), self.y[i]

    return _Set([f"data_batch_{i}" for i in range(1, 6)]), _Set(["test_batch"])
"""


def seed_script(seed_file: Path, out: Path, as_sunray: bool) -> Path:
    """The seed's tune-sample.py with only ``load_data`` replaced; with ``as_sunray``
    its Ray imports also spelled as sunray's (``import sunray as ray`` …)."""
    src = seed_file.read_text()
    start = src.index("def load_data(")
    end = src.index("class Net(")
    src = src[:start] + LOAD_DATA.lstrip() + "\n" + src[end:]
    if as_sunray:
        for a, b in [
            ("import ray\n", "import sunray as ray\n"),
            ("from ray import tune\n", "from sunray import tune\n"),
            ("from ray.air import session\n", "from sunray.air import session\n"),
            (
                "from ray.air.checkpoint import Checkpoint\n",
                "from sunray.air.checkpoint import Checkpoint\n",
            ),
            (
                "from ray.tune.schedulers import ASHAScheduler\n",
                "from sunray.tune.schedulers import ASHAScheduler\n",
            ),
        ]:
            assert a in src, a
            src = src.replace(a, b)
    out.write_text(src)
    return out
