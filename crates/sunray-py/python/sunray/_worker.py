"""A Python worker: started by a node agent for a Python driver's tasks (the driver's
interpreter, its ``sys.path`` and working directory). The loop is the runtime's (Rust,
GIL released while it waits); :func:`_invoke` runs one task.
"""

from __future__ import annotations

import inspect
import os
import pickle
import sys

import cloudpickle

from . import _serialization as ser
from . import _sunray

# Functions by id, fetched from the driver once per worker.
_functions: dict[bytes, object] = {}


class _WorkerImportError(ModuleNotFoundError):
    """A task's function (or a module it needs) cannot be imported on this node."""


def _function(fid: bytes, name: str):
    fn = _functions.get(fid)
    if fn is not None:
        return fn
    code = _sunray.fetch_function(fid)
    if not code:
        raise LookupError(f"the driver has no function {name} (id {fid.hex()})")
    try:
        fn = cloudpickle.loads(code)
    except ImportError as e:
        module = getattr(e, "name", None) or str(e)
        raise _WorkerImportError(
            f"the worker cannot import module {module!r}, which {name} needs ({e}); "
            f"the worker's sys.path is {sys.path}: install it on every node, or keep it "
            "on a file system every node sees, under the driver's sys.path",
            name=module,
        ) from None
    _functions[fid] = fn
    return fn


def _node_ip() -> str:
    t = _sunray.current_task()
    return t["node_ip"] if t else ""


# The actor this worker serves (its constructor ran here).
_actor = None


def _values(args: list[bytes], picks) -> list | bytes:
    """The task's argument values, or the error payload of a failed dependency (which is
    then the task's result too)."""
    values = []
    for i, a in enumerate(args):
        if ser.is_error(a):
            return a
        v = ser.loads(a)
        pick = picks.get(i) if picks else None
        values.append(v if pick is None else v[pick])
    return values


def _create_actor(name: str, args: list[bytes]) -> bytes:
    """Runs the constructor. What it raises (or a failed argument's error) propagates:
    the runtime then knows the actor did not start, and its callers get ActorDiedError
    with this traceback."""
    global _actor
    fid, npos, kwnames, picks = pickle.loads(args[0])
    values = []
    for i, a in enumerate(args[1:]):
        v = ser.loads(a)
        pick = picks.get(i) if picks else None
        values.append(v if pick is None else v[pick])
    cls = _function(fid, name)
    _actor = cls(*values[:npos], **dict(zip(kwnames, values[npos:])))
    from ._actor import is_async

    if is_async(cls):
        _start_loop()
    return ser.dumps(None)


# An async actor's event loop, on a thread of its own: its calls' threads hand their
# coroutines to it and wait (GIL released) for the result.
_loop = None


def _start_loop() -> None:
    global _loop
    import asyncio
    import threading

    _loop = asyncio.new_event_loop()
    threading.Thread(target=_loop.run_forever, name="sunray-actor-loop", daemon=True).start()


def _run_method(fn, args, kwargs):
    if _loop is not None and inspect.iscoroutinefunction(fn):
        import asyncio

        from . import _connect_in_task

        # The loop's thread runs no task of its own: the process joins the cluster here,
        # in the call's context, for what its coroutines get, await or submit.
        _connect_in_task()
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), _loop).result()
    return fn(*args, **kwargs)


def _call_actor(name: str, args: list[bytes]) -> bytes:
    method, npos, kwnames, num_returns, picks = pickle.loads(args[0])
    values = _values(args[1:], picks)
    if isinstance(values, bytes):
        return values
    try:
        fn = getattr(_actor, method)
    except AttributeError as e:
        return ser.error_payload(e, name, _node_ip())
    try:
        result = _returned(
            _run_method(fn, values[:npos], dict(zip(kwnames, values[npos:]))), num_returns, name
        )
        return ser.dumps(result)
    except Exception as e:  # noqa: BLE001 (a method's exception goes back to its caller)
        return ser.error_payload(e, name, _node_ip(), skip=1)


def _returned(result, num_returns: int, name: str):
    """What a function returned, checked against ``num_returns`` (a tuple of them)."""
    if num_returns > 1:
        result = tuple(result)
        if len(result) != num_returns:
            raise ValueError(
                f"{name} was declared with num_returns={num_returns} "
                f"but returned {len(result)} values"
            )
    return result


def _invoke(name: str, args: list[bytes], kind: int = 0) -> bytes:
    if kind == 1:
        return _create_actor(name, args)
    if kind == 2:
        return _call_actor(name, args)
    fid, npos, kwnames, num_returns, retry_exceptions, max_retries, picks = pickle.loads(args[0])
    values = _values(args[1:], picks)
    if isinstance(values, bytes):
        return values
    try:
        fn = _function(fid, name)
    except BaseException as e:  # noqa: BLE001 (whatever loading raises is the task's error)
        return ser.error_payload(e, name, _node_ip())
    pos, kw = values[:npos], dict(zip(kwnames, values[npos:]))
    attempts = 0
    while True:
        try:
            return ser.dumps(_returned(fn(*pos, **kw), num_returns, name))
        except Exception as e:  # noqa: BLE001 (a task's exception goes back to its caller)
            if _retry(e, retry_exceptions) and attempts < max_retries:
                attempts += 1
                continue
            return ser.error_payload(e, name, _node_ip(), skip=1)


def _retry(e: Exception, retry_exceptions) -> bool:
    if retry_exceptions is True:
        return True
    if retry_exceptions:
        return isinstance(e, tuple(retry_exceptions))
    return False


def _adopt(sys_path: list[str], cwd: str) -> None:
    """A worker started ahead of any driver now serves one: its module path and
    working directory, as a worker started for it would have."""
    sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]
    if os.path.isdir(cwd):
        os.chdir(cwd)


def main() -> None:
    _sunray.worker_main(_invoke, _adopt)


if __name__ == "__main__":
    main()
