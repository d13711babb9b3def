"""Actors: ``@sunray.remote`` on a class. ``Counter.remote(*args)`` starts one in a
worker of its own (its constructor runs there) and returns an :class:`ActorHandle`;
``handle.method.remote(*args)`` calls a method there and returns an ObjectRef. Calls
from one caller run one at a time, in the order they were submitted. The head keeps
the actor table (placement, restarts, names); this module only pickles.
"""

from __future__ import annotations

import inspect
import pickle

from . import _sunray, exceptions
from ._signature import Signature

_ACTOR_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "name",
    "namespace",
    "lifetime",
    "max_restarts",
    "max_task_retries",
    "max_concurrency",
    "get_if_exists",
    "runtime_env",
    "scheduling_strategy",
}


def _check_actor_options(opts: dict) -> dict:
    from . import _check_options

    unknown = set(opts) - _ACTOR_OPTIONS
    if unknown:
        raise TypeError(f"unsupported actor options: {', '.join(sorted(unknown))}")
    _check_options(
        {k: opts[k] for k in ("num_cpus", "num_gpus", "memory", "resources") if k in opts}
    )
    for k in ("max_restarts", "max_task_retries"):
        v = opts.get(k)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= -1):
            raise ValueError(f"{k} must be an int >= 0, or -1 for no limit, got {v!r}")
    life = opts.get("lifetime")
    if life not in (None, "detached", "non_detached"):
        raise ValueError(f'lifetime must be None, "detached" or "non_detached", got {life!r}')
    name = opts.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise ValueError(f"an actor's name must be a non-empty string, got {name!r}")
    mc = opts.get("max_concurrency")
    if mc is not None and not (
        isinstance(mc, int) and not isinstance(mc, bool) and 1 <= mc <= 1000
    ):
        raise ValueError(f"max_concurrency must be an int from 1 to 1000, got {mc!r}")
    return opts


def _methods_of(cls) -> dict[str, tuple[int, Signature | None]]:
    """Method names, their ``num_returns`` (``@sunray.method``) and what they accept."""
    out = {}
    for n in dir(cls):
        f = getattr(cls, n, None)
        if callable(f) and (not n.startswith("__") or n == "__call__"):
            out[n] = (getattr(f, "__sunray_num_returns__", 1), Signature.of_method(cls, n))
    return out


# Calls an async actor runs at once unless told otherwise (Ray: 1000; here each call
# waits on a thread of its own, so fewer).
ASYNC_CONCURRENCY = 100


def is_async(cls) -> bool:
    """Has the class an ``async def`` method (it is then an async actor)?"""
    return any(
        inspect.iscoroutinefunction(getattr(cls, n, None))
        for n in dir(cls)
        if not n.startswith("__")
    )


class ActorClass:
    """A class made an actor by ``@sunray.remote``: ``.remote(*args, **kwargs)`` starts
    one; ``.options(num_cpus=…, num_gpus=…, resources=…, name=…, lifetime="detached",
    max_restarts=…, max_task_retries=…, max_concurrency=…, get_if_exists=…)`` gives a
    copy with options. With ``max_concurrency`` above 1, that many calls run at once,
    each on a thread of the actor's process (Ray's threaded actors: no order then).
    A class with ``async def`` methods is an async actor (Ray's): its coroutines run on
    one event loop in the actor's process, up to ``max_concurrency`` at once (default
    100), and may ``await`` ObjectRefs.
    An actor holds its CPUs and GPUs (default: none) for its lifetime, its process
    seeing exactly its GPUs in ``CUDA_VISIBLE_DEVICES``."""

    def __init__(self, cls: type, options: dict):
        self._cls = cls
        self._options = _check_actor_options(dict(options))
        self._name = f"{cls.__module__}.{cls.__qualname__}"
        self._methods = _methods_of(cls)
        # What the constructor accepts, checked at .remote() as Ray does.
        self._signature = Signature.of(cls)
        self._code: tuple[int, bytes] | None = None

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"actor class {self._name} cannot be instantiated directly: "
            f"use {self._cls.__name__}.remote(...)"
        )

    def options(self, **options) -> ActorClass:
        a = ActorClass.__new__(ActorClass)
        a.__dict__.update(self.__dict__)
        a._options = _check_actor_options({**self._options, **options})
        return a

    def _fid(self) -> bytes:
        from . import _fid_of, _session

        code = self._code
        if code is None or code[0] != _session:
            code = self._code = (_session, _fid_of(self._cls))
        return code[1]

    def remote(self, *args, **kwargs) -> ActorHandle:
        from . import _bundle_of, _connect_in_task, _pack_args, init

        sig = self._signature
        if sig is not None and (why := sig.mismatch(args, kwargs)) is not None:
            raise TypeError(f"{self._cls.__qualname__}.remote(): {why}")
        _connect_in_task()
        if not _sunray.is_initialized():
            init()
        o = self._options
        name = o.get("name")
        if o.get("get_if_exists") and name is not None:
            try:
                return get_actor(name)
            except ValueError:
                pass
        wire, picks = _pack_args(args, kwargs)
        wire[0] = pickle.dumps((self._fid(), len(args), tuple(kwargs), picks), protocol=5)

        def limit(k):
            v = o.get(k)
            return 0 if v is None else v

        ref = _sunray.submit(
            self._name,
            wire,
            float(o.get("num_cpus") or 0.0),
            float(o.get("num_gpus") or 0.0),
            float(o.get("memory") or 0.0),
            [(k, float(v)) for k, v in (o.get("resources") or {}).items()],
            0,
            (
                self._name,
                name,
                o.get("lifetime") == "detached",
                limit("max_restarts"),
                limit("max_task_retries"),
                o.get("max_concurrency") or (ASYNC_CONCURRENCY if is_async(self._cls) else 1),
            ),
            None,
            _bundle_of(o),
        )
        return ActorHandle(ref.id, self._name, self._methods, ref)


class ActorHandle:
    """A live actor: ``handle.method.remote(*args)`` calls one of its methods. Handles
    pickle (pass them to tasks and other actors) and compare by actor."""

    def __init__(self, actor_id: int, class_name: str, methods=None, created=None):
        self._actor_id = actor_id
        self._class_name = class_name
        self._method_names = methods
        # The constructor's result, kept so that its error can be raised to the creator.
        self._created = created

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_") and name != "__call__":
            raise AttributeError(name)
        if self._method_names is None:
            return ActorMethod(self, name)
        if name not in self._method_names:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}")
        num_returns, signature = self._method_names[name]
        return ActorMethod(self, name, num_returns, signature)

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._method_names))

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id:016x})"


class ActorMethod:
    """One method of an actor: ``.remote(*args, **kwargs)`` submits a call;
    ``.options(num_returns=…)`` gives a copy returning that many refs."""

    def __init__(
        self,
        handle: ActorHandle,
        name: str,
        num_returns: int = 1,
        signature: Signature | None = None,
    ):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._signature = signature

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods cannot be called directly: use .{self._name}.remote(...)")

    def options(self, *, num_returns: int = 1, **others) -> ActorMethod:
        if others:
            raise TypeError(f"unsupported actor method options: {', '.join(sorted(others))}")
        if not (isinstance(num_returns, int) and num_returns >= 1):
            raise ValueError(f"num_returns must be an int >= 1, got {num_returns!r}")
        return ActorMethod(self._handle, self._name, num_returns, self._signature)

    def remote(self, *args, **kwargs):
        from . import _connect_in_task, _pack_args

        sig = self._signature
        if sig is not None and (why := sig.mismatch(args, kwargs)) is not None:
            short = self._handle._class_name.rpartition(".")[2]
            raise TypeError(f"{short}.{self._name}.remote(): {why}")
        _connect_in_task()
        wire, picks = _pack_args(args, kwargs)
        n = self._num_returns
        wire[0] = pickle.dumps((self._name, len(args), tuple(kwargs), n, picks), protocol=5)
        ref = _sunray.submit(
            f"{self._handle._class_name}.{self._name}",
            wire,
            0.0,
            0.0,
            0.0,
            [],
            0,
            None,
            self._handle._actor_id,
        )
        return ref.split(n) if n > 1 else ref


def method(*, num_returns: int = 1):
    """``@sunray.method(num_returns=2)`` on an actor's method (Ray's ``ray.method``)."""

    def mark(fn):
        fn.__sunray_num_returns__ = num_returns
        return fn

    return mark


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The live actor named ``name`` (``.options(name=…)``); ``ValueError`` if none."""
    from . import _connect_in_task

    _connect_in_task()
    for a in _sunray.actors():
        if a["name"] == name and a["state"] != "DEAD":
            return ActorHandle(a["actor_id"], a["class_name"])
    raise ValueError(f"no live actor is named {name!r} (names are given with .options(name=...))")


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Ends the actor's process at once; with ``no_restart=False`` it restarts as after
    a crash (while it has restarts left). Calls not yet run fail with ActorDiedError."""
    from . import _connect_in_task

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an actor handle, got {type(actor).__name__}")
    _connect_in_task()
    _sunray.kill_actor(actor._actor_id, bool(no_restart))


__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exceptions", "get_actor", "kill", "method"]
