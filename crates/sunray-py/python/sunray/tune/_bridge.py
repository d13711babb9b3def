"""What sunray-tune's Rust controller calls back into Python for: the functions of a
search space (``sample_from``), of a stop criterion or a PBT explore, and searchers
written in Python. Each takes and returns JSON text."""

from __future__ import annotations

import json
import pickle
import random
import sys

from ._space import dumps


class _Spec(dict):
    """What ``sample_from`` functions get, as in Ray: ``spec.config`` (attribute or
    key access) holds the parameters drawn so far."""

    def __init__(self, config: dict):
        super().__init__(config=_AttrDict(config))

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _AttrDict(dict):
    def __init__(self, d: dict):
        super().__init__({k: _AttrDict(v) if isinstance(v, dict) else v for k, v in d.items()})

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sample_from(func, seed: int, config_json: str) -> str:
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed)
    return dumps(func(_Spec(json.loads(config_json))))


def call_with_config(func, config_json: str) -> str:
    return dumps(func(json.loads(config_json)))


def call_gamma(func, n: int) -> str:
    """TPESearch's gamma function: the good set's size for ``n`` results."""
    g = func(n)
    if isinstance(g, bool) or not isinstance(g, int) or g < 0:
        raise TypeError(f"TPESearch: gamma({n}) must return a whole number >= 0, got {g!r}")
    return dumps(g)


def call_stop(func, trial_id: str, result_json: str) -> str:
    return dumps(bool(func(trial_id, json.loads(result_json))))


def searcher_suggest(searcher, trial_id: str) -> str:
    return dumps(searcher.suggest(trial_id))


def searcher_result(searcher, trial_id: str, result_json: str) -> str:
    searcher.on_trial_result(trial_id, json.loads(result_json))
    return "null"


def searcher_complete(searcher, trial_id: str, last_json: str | None, error: bool) -> str:
    """Ray passes the trial's last result (None when it reported nothing)."""
    result = json.loads(last_json) if last_json is not None else None
    searcher.on_trial_complete(trial_id, result=result, error=error)
    return "null"


def searcher_save(searcher) -> str:
    return dumps(searcher.get_state())


def searcher_restore(searcher, state_json: str) -> str:
    state = json.loads(state_json)
    if state is not None:
        searcher.set_state(state)
    return "null"


def trial_error(data: bytes) -> str:
    """The message (with traceback) of a trial task's error payload; "" for a value."""
    from .. import _serialization as ser

    if not ser.is_error(data):
        return dumps("")
    info = pickle.loads(memoryview(data)[1:])
    where = f"{info['hostname']} ({info['node_ip']}, pid {info['pid']})"
    if info["cause_class"] == "sunray.tune._trial.TrialFailed":
        # The session's own one-line reason (a checkpoint it could not save): no
        # traceback, which would only show sunray's frames.
        reason = info["message"].removeprefix("TrialFailed: ")
        return dumps(f"{reason} (on {where})")
    return dumps(f"{info['traceback'].rstrip()}\n(on {where})")
