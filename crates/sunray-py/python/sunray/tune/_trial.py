"""A trial inside its task: the function the Rust tuner launches for each trial, and
what a trainable calls (``tune.report``, ``tune.get_checkpoint``, ``tune.get_context``).
The session underneath is sunray-tune's (``sunray._sunray.TrialSession``)."""

from __future__ import annotations

import json
import numbers
import os
import shutil
import tempfile

from .. import _sunray
from ..exceptions import TuneError
from ._checkpoint import Checkpoint


class TrialStopped(BaseException):
    """Raised by ``report`` once the tuner has ended the trial (a scheduler's early
    stop, a stop criterion, a pause); it ends the trainable like a normal return.
    A BaseException, so that a trainable's ``except Exception`` does not catch it."""


class TrialFailed(TuneError):
    """The trial cannot go on through no fault of its trainable's: the tuner's session
    could not save its checkpoint (a full disk, say) or reach the tuner. The trial fails
    with this one-line reason, whatever the trainable made of the error ``report``
    raised."""


class _Trial:
    def __init__(self, session, config: dict, experiment_dir: str, options: dict):
        self.session = session
        self.config = config
        self.experiment_dir = experiment_dir
        self.options = options


_current: _Trial | None = None


class TrialProgram:
    """What each trial's task gets (pickled once, shared by every trial): the
    trainable, the names of ``with_parameters`` objects, and checkpoint settings."""

    def __init__(self, trainable, param_names: list[str], options: dict):
        self.trainable = trainable
        self.param_names = param_names
        self.options = options


def run_trial(program: TrialProgram, trial_id: str, experiment_dir: str, marker: str, *params):
    global _current
    began = _sunray.tune_begin(trial_id, experiment_dir, marker)
    if began is None:
        return  # the tuner no longer wants this trial
    config_json, session = began
    trial = _Trial(session, json.loads(config_json), experiment_dir, program.options)
    kwargs = dict(zip(program.param_names, params))
    cwd = os.getcwd()
    # Ray runs a trainable in its trial's directory (files it writes by relative path
    # land there); a node that does not see the experiment gets a scratch directory.
    os.chdir(session.local_dir)
    _current = trial
    failure = None
    try:
        from . import Trainable

        t = program.trainable
        if isinstance(t, type) and issubclass(t, Trainable):
            _run_class(t, trial, kwargs)
        else:
            out = t(trial.config, **kwargs)
            if isinstance(out, dict):
                report(out)
    except TrialStopped:
        pass
    except Exception:
        # The session's own reason (the error `report` raised, or what the trainable
        # raised after it) is the trial's: raised below, without a traceback.
        if session.failure is None:
            raise
    finally:
        failure = session.failure
        _current = None
        os.chdir(cwd)
        session.close()
    if failure is not None:
        raise TrialFailed(failure)
    return


def _run_class(cls, trial: _Trial, kwargs: dict) -> None:
    obj = cls(trial.config, **kwargs)
    start = trial.session.checkpoint
    if start is not None:
        obj.load_checkpoint(start)
    every = int(trial.options.get("checkpoint_frequency") or 0)
    at_end = bool(trial.options.get("checkpoint_at_end"))
    try:
        while True:
            result = dict(obj.step() or {})
            done = bool(result.pop("done", False))
            it = trial.session.iteration + 1
            checkpoint = None
            if (every and it % every == 0) or (done and at_end):
                d = tempfile.mkdtemp(prefix="sunray-trainable-")
                obj.save_checkpoint(d)
                checkpoint = Checkpoint(d)
            try:
                report(result, checkpoint=checkpoint)
            finally:
                if checkpoint is not None:
                    shutil.rmtree(checkpoint.path, ignore_errors=True)
            if done:
                return
    finally:
        obj.cleanup()


def _flat(metrics: dict, prefix: str = ""):
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat(v, key + "/")
        elif v is None:
            continue
        elif isinstance(v, numbers.Number) or hasattr(v, "__float__"):
            try:
                yield key, float(v)
            except (TypeError, ValueError):
                raise TypeError(f"tune.report: metric {key!r} is not a number ({v!r})") from None
        else:
            raise TypeError(
                f"tune.report: metric {key!r} is a {type(v).__name__}; sunray's results hold "
                "numbers (and nested dicts of numbers)"
            )


def _trial(what: str) -> _Trial:
    if _current is None:
        raise RuntimeError(f"{what} is only available inside a trial run by tune.Tuner")
    return _current


def report(metrics: dict, *, checkpoint: Checkpoint | None = None) -> None:
    """Reports one result (and optionally a checkpoint) to the tuner. When the tuner
    has ended the trial, this ends the trainable (a clean end, not an error)."""
    t = _trial("tune.report()")
    if not isinstance(metrics, dict):
        raise TypeError(f"tune.report takes a dict of metrics, got {type(metrics).__name__}")
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError("checkpoint must be a tune.Checkpoint (Checkpoint.from_directory(dir))")
    path = checkpoint.path if checkpoint is not None else None
    if not t.session.report(list(_flat(metrics)), path):
        raise TrialStopped()


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial resumes from (after a pause, a failure, a PBT exploit
    or a restored experiment), else None."""
    t = _trial("tune.get_checkpoint()")
    p = t.session.checkpoint
    return Checkpoint(p) if p is not None else None


class TrainContext:
    """Ray's ``tune.get_context()`` / ``train.get_context()``: where the trial runs."""

    def __init__(self, trial: _Trial):
        self._t = trial

    def get_trial_id(self) -> str:
        return self._t.session.trial_id

    def get_trial_name(self) -> str:
        return self.get_trial_id()

    def get_trial_dir(self) -> str:
        return self._t.session.trial_dir

    def get_experiment_name(self) -> str:
        return os.path.basename(self._t.experiment_dir)

    def get_trial_resources(self) -> dict:
        return dict(self._t.options.get("resources", {}))

    def get_world_rank(self) -> int:
        return 0

    def get_local_rank(self) -> int:
        return 0

    def get_world_size(self) -> int:
        return 1

    def get_storage(self):
        raise NotImplementedError("sunray has no train.get_context().get_storage()")


def get_context() -> TrainContext:
    return TrainContext(_trial("tune.get_context()"))
