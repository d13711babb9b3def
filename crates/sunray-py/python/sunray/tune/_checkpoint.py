"""Ray's ``Checkpoint``: a directory of files a trial wrote."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile

_DICT_FILE = "dict_checkpoint.pkl"


class Checkpoint:
    """A checkpoint directory. Reported with ``tune.report(..., checkpoint=c)`` it is
    copied into the experiment (the directory given stays the trial's)."""

    def __init__(self, path: str | os.PathLike, filesystem=None):
        if filesystem is not None:
            raise NotImplementedError(
                "sunray checkpoints live on local or shared file systems only"
            )
        self.path = os.fspath(path)

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> Checkpoint:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory {os.fspath(path)!r} does not exist")
        return cls(os.path.abspath(path))

    @classmethod
    def from_dict(cls, data: dict) -> Checkpoint:
        """Ray AIR's dictionary checkpoint: pickled into a fresh directory."""
        d = tempfile.mkdtemp(prefix="sunray-checkpoint-")
        with open(os.path.join(d, _DICT_FILE), "wb") as f:
            pickle.dump(data, f)
        return cls(d)

    def to_dict(self) -> dict:
        with open(os.path.join(self.path, _DICT_FILE), "rb") as f:
            return pickle.load(f)

    @contextlib.contextmanager
    def as_directory(self):
        """The checkpoint's files, in a directory to read (not to change)."""
        yield self.path

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copies the files to ``path`` (default: a new temporary directory)."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="checkpoint_")
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return target

    def __fspath__(self) -> str:
        return self.path

    def __eq__(self, other) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"
