"""sunray: Ray's Python API over sunray's Rust runtime (``import sunray as ray``).

>>> import sunray as ray
>>> ray.init()                      # an embedded cluster; or "auto", or "host:port"
>>> @ray.remote
... def square(x):
...     return x * x
>>> ray.get([square.remote(i) for i in range(4)])
[0, 1, 4, 9]

The cluster, its scheduler and the connections are the Rust runtime's; this package
pickles functions and values and turns Ray's calls into the extension's
(``sunray._sunray``).
"""

from __future__ import annotations

import atexit
import functools
import os
import pickle
import sys
import warnings

import cloudpickle

from . import _serialization as ser
from . import _sunray, exceptions
from ._signature import Signature
from ._sunray import ObjectRef
from .exceptions import GetTimeoutError, TaskError

__all__ = [
    "GetTimeoutError",
    "ObjectRef",
    "TaskError",
    "available_resources",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "wait",
]

#: Ray retries a task 3 times after its worker or node died.
DEFAULT_MAX_RETRIES = 3

# Bumped by every init(): functions are registered once per connection.
_session = 0

# Ray's init() arguments that mean nothing here (sunray has no dashboard process, no
# separate object store, and always sends workers' output to the driver).
_IGNORED_INIT_ARGS = {
    "include_dashboard",
    "dashboard_host",
    "dashboard_port",
    "log_to_driver",
    "logging_level",
    "configure_logging",
    "object_store_memory",
    "_temp_dir",
    "namespace",
    "local_mode",
}


class _Context:
    """What ``init`` returns (Ray's ``RayContext``); also a context manager."""

    def __init__(self, address: str):
        self.address_info = {"address": address, "gcs_address": address}
        self.dashboard_url = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()

    def __getitem__(self, key):
        return self.address_info[key]

    def __repr__(self):
        return f"sunray context (address {self.address_info['address']})"


def _driver_sys_path() -> list[str]:
    # "" means the working directory: the worker gets it spelled out.
    return [os.path.abspath(p) if p == "" else p for p in sys.path]


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    ignore_reinit_error: bool = False,
    _token: str | None = None,
    **kwargs: object,
) -> _Context:
    """Connects to a cluster, or starts one in this process.

    ``address``: None (and no ``SUNRAY_ADDRESS``) starts an embedded cluster with this
    host's CPUs and GPUs (or ``num_cpus``/``num_gpus``/``resources``); ``"auto"`` joins
    the cluster started on this host with ``sunray start --head``; ``"host:port"`` joins
    that head. The token is found in this host's session directory or
    ``SUNRAY_TOKEN``.
    """
    global _session
    if _IN_WORKER:
        # A task is part of its driver's cluster already.
        _connect_in_task()
        return _Context(_address)
    if _sunray.is_initialized():
        if ignore_reinit_error:
            return _Context(_address)
        raise exceptions.SunrayError(
            "sunray.init() was already called: call sunray.shutdown() first, "
            "or pass ignore_reinit_error=True"
        )
    unknown = set(kwargs) - _IGNORED_INIT_ARGS
    if unknown:
        raise TypeError(f"init() got unsupported arguments: {', '.join(sorted(unknown))}")
    for name, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise exceptions.ConfigError(f"{name} must be a number >= 0, got {v!r}")
    if address is not None and (num_cpus is not None or num_gpus is not None or resources):
        warnings.warn(
            "num_cpus, num_gpus and resources only size an embedded cluster; "
            "a cluster joined by address keeps its own",
            stacklevel=2,
        )
    res = [(str(k), float(v)) for k, v in (resources or {}).items()]
    addr = _sunray.init(address, _token, num_cpus, num_gpus, res, _driver_sys_path(), os.getcwd())
    _set_address(addr)
    _session += 1
    return _Context(addr)


_address = ""

# Set by the node agent in the worker processes it starts.
_IN_WORKER = "SUNRAY_WORKER_SOCKET" in os.environ


def _connect_in_task() -> None:
    """Inside a task, the worker joins the cluster for the task's job the first time
    the task submits, calls an actor, gets, waits or puts (Ray's nested tasks)."""
    if _IN_WORKER and not _sunray.is_initialized():
        _sunray.init_worker(_driver_sys_path(), os.getcwd())


def _set_address(a: str) -> None:
    global _address
    _address = a


def shutdown() -> None:
    """Leaves the cluster (an embedded one stops and its workers end)."""
    _sunray.shutdown()


atexit.register(shutdown)


def is_initialized() -> bool:
    return _sunray.is_initialized()


def _check_refs(refs, what: str) -> None:
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"{what} takes ObjectRefs, got {type(r).__name__}: {r!r}")


def _shown(v) -> str:
    """A wrong argument in an error: its type and (a bounded part of) its value."""
    r = repr(v)
    return f"{type(v).__name__}: {r if len(r) <= 200 else r[:200] + '…'}"


def _value(ref: ObjectRef, data: bytes):
    v = ser.loads(data)
    return v if ref.index is None else v[ref.index]


def get(object_refs, *, timeout: float | None = None):
    """The value of one ObjectRef, or the values of a list of them, in order.

    Raises the task's exception (a :class:`TaskError` that is also an instance of the
    task's own exception class), or :class:`GetTimeoutError` after ``timeout`` seconds.
    """
    _connect_in_task()
    if isinstance(object_refs, ObjectRef):
        (data,) = _sunray.get([object_refs.id], timeout)
        return _value(object_refs, data)
    if not isinstance(object_refs, (list, tuple)):
        # A string is one wrong argument, not a list of letters. ValueError: Ray's class.
        raise ValueError(  # noqa: TRY004
            f"get() takes an ObjectRef or a list of ObjectRefs, got {_shown(object_refs)}"
        )
    refs = list(object_refs)
    _check_refs(refs, "get()")
    datas = _sunray.get([r.id for r in refs], timeout)
    return [_value(r, d) for r, d in zip(refs, datas)]


def _awaitable(ref):
    """What ``await ref`` waits for: ``get(ref)`` on the running loop's executor."""
    import asyncio

    return asyncio.get_running_loop().run_in_executor(None, get, ref)


def wait(
    object_refs,
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
):
    """``(ready, not_ready)``: once ``num_returns`` refs are ready or ``timeout`` passed;
    ``ready`` holds at most ``num_returns`` refs, both keep the order given; no refs at
    all give ``([], [])``. The extension checks ``num_returns``."""
    _connect_in_task()
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() takes a list of ObjectRefs, got a single ObjectRef")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() takes a list of ObjectRefs, got {_shown(object_refs)}")
    refs = list(object_refs)
    _check_refs(refs, "wait()")
    # The refs of one task's returns share its id (their index tells them apart): they
    # are distinct refs, ready together.
    if len({(r.id, r.index) for r in refs}) != len(refs):
        raise ValueError("wait() requires a list of unique ObjectRefs")
    flags = _sunray.wait([r.id for r in refs], num_returns, timeout)
    ready, not_ready = [], []
    for r, f in zip(refs, flags):
        (ready if f and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def put(value) -> ObjectRef:
    """Stores ``value`` in the cluster; tasks given the ref get the value."""
    _connect_in_task()
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef: pass the ref itself instead")
    return _sunray.put(ser.dumps(value))


def nodes() -> list[dict]:
    """Every node the head knows, alive or dead, with Ray's keys (``NodeID``, ``Alive``,
    ``NodeManagerAddress``, ``NodeManagerHostname``, ``Resources``…)."""
    return _sunray.nodes()


def _sum(key: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n[key].items():
                out[k] = out.get(k, 0.0) + v
    return out


def cluster_resources() -> dict[str, float]:
    return _sum("Resources")


def available_resources() -> dict[str, float]:
    return _sum("AvailableResources")


def _gpu_ids(ids: list[str]) -> list:
    return [int(i) if i.isdigit() else i for i in ids]


class RuntimeContext:
    """Where the calling code runs (Ray's ``get_runtime_context()``)."""

    def __init__(self):
        self._task = _sunray.current_task()

    @property
    def node_id(self):
        return self.get_node_id()

    @property
    def job_id(self):
        return self.get_job_id()

    @property
    def task_id(self):
        return self.get_task_id()

    def get_node_id(self) -> str | None:
        """The node running this task (None in the driver)."""
        return self._task["node_id"] if self._task else None

    def get_node_ip(self) -> str:
        return self._task["node_ip"] if self._task else _sunray.default_ip()

    def get_job_id(self) -> str | None:
        if self._task:
            return self._task["job_id"]
        return _sunray.job_id() if _sunray.is_initialized() else None

    def get_task_id(self) -> str | None:
        return self._task["task_id"] if self._task else None

    def get_actor_id(self) -> str | None:
        """The actor this code runs in (its constructor or a method), else None."""
        return self._task.get("actor_id") if self._task else None

    @property
    def actor_id(self):
        return self.get_actor_id()

    def get_task_name(self) -> str | None:
        return self._task["function"] if self._task else None

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """GPUs this task may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
        if self._task:
            return {"GPU": list(self._task["gpu_ids"])}
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return {"GPU": [g for g in visible.split(",") if g]}

    def get(self) -> dict:
        return {
            "node_id": self.get_node_id(),
            "job_id": self.get_job_id(),
            "task_id": self.get_task_id(),
        }


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext()


def get_gpu_ids() -> list:
    """The GPUs this task may use (ints where ``CUDA_VISIBLE_DEVICES`` names them so)."""
    return _gpu_ids(get_runtime_context().get_accelerator_ids()["GPU"])


_TASK_OPTIONS = {
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "max_retries",
    "retry_exceptions",
    "num_returns",
    "name",
    "scheduling_strategy",
    "runtime_env",
}


def _check_options(opts: dict) -> dict:
    unknown = set(opts) - _TASK_OPTIONS
    if unknown:
        raise TypeError(f"unsupported task options: {', '.join(sorted(unknown))}")
    for k in ("num_cpus", "num_gpus", "memory"):
        v = opts.get(k)
        if v is not None and not (
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        ):
            raise ValueError(f"{k} must be a number >= 0, got {v!r}")
    for k, v in (opts.get("resources") or {}).items():
        if k in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus, not resources={{{k!r}: …}}")
        if not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"resource {k!r} must be a number >= 0, got {v!r}")
    r = opts.get("max_retries")
    if r is not None and not (isinstance(r, int) and (r >= 0 or r == -1)):
        raise ValueError(f"max_retries must be an int >= 0 (or -1), got {r!r}")
    n = opts.get("num_returns")
    if n is not None and not (isinstance(n, int) and n >= 1):
        raise ValueError(f"num_returns must be an int >= 1, got {n!r}")
    rex = opts.get("retry_exceptions")
    if rex is not None and not isinstance(rex, bool):
        rex = list(rex)
        if not all(isinstance(c, type) and issubclass(c, BaseException) for c in rex):
            raise TypeError("retry_exceptions must be a bool or a list of exception classes")
        opts = dict(opts, retry_exceptions=rex)
    return opts


def _bundle_of(options: dict):
    from .util.scheduling_strategies import bundle_of

    return bundle_of(options) if options.get("scheduling_strategy") is not None else None


def _pack_args(args, kwargs) -> tuple[list, dict[int, int]]:
    """A task's wire arguments: a slot for its header, then each value pickled, or an
    ObjectRef (resolved before the task runs; ``picks`` notes the return it names)."""
    wire: list = [None]
    picks: dict[int, int] = {}
    for v in (*args, *kwargs.values()):
        if isinstance(v, ObjectRef):
            if v.index is not None:
                picks[len(wire) - 1] = v.index
            wire.append(v)
        else:
            wire.append(ser.dumps(v))
    return wire, picks


def _fid_of(obj) -> bytes:
    """Pickles a function or class, makes it available to this driver's workers (they
    fetch it by id, once each); returns its id."""
    import hashlib  # here: workers never need it, and it costs 3 ms to import

    data = cloudpickle.dumps(obj, protocol=5)
    fid = hashlib.blake2b(data, digest_size=16).digest()
    _sunray.register_function(fid, data)
    return fid


class RemoteFunction:
    """A function made remote by ``@sunray.remote``: ``f.remote(*args, **kwargs)``
    submits it and returns an ObjectRef at once (a list of them for ``num_returns``
    above 1); ``f.options(...)`` gives a copy with other options."""

    def __init__(self, fn, options: dict):
        self._fn = fn
        self._options = _check_options(options)
        self._name = f"{fn.__module__}.{fn.__qualname__}"
        self._code: tuple[int, bytes] | None = None
        # What .remote() accepts, checked there as Ray does (made once, shared by copies).
        self._signature = Signature.of(fn)
        self._call = f"{getattr(fn, '__qualname__', self._name)}.remote()"
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"remote function {self._name} cannot be called directly: "
            f"use {self._fn.__name__}.remote(...)"
        )

    def options(self, **options) -> RemoteFunction:
        f = RemoteFunction.__new__(RemoteFunction)
        f.__dict__.update(self.__dict__)
        f._options = _check_options({**self._options, **options})
        return f

    def _fid(self) -> bytes:
        # Pickled once per connection; workers fetch it by id (once each).
        code = self._code
        if code is None or code[0] != _session:
            code = self._code = (_session, _fid_of(self._fn))
            # .options() copies share the pickled code.
        return code[1]

    def remote(self, *args, **kwargs):
        sig = self._signature
        if sig is not None and (why := sig.mismatch(args, kwargs)) is not None:
            raise TypeError(f"{self._call}: {why}")
        _connect_in_task()
        if not _sunray.is_initialized():
            init()
        o = self._options
        num_returns = o.get("num_returns") or 1
        retries = o.get("max_retries")
        retries = DEFAULT_MAX_RETRIES if retries is None else retries
        if retries == -1:
            retries = 2**31
        wire, picks = _pack_args(args, kwargs)
        rex = o.get("retry_exceptions") or False
        header = (
            self._fid(),
            len(args),
            tuple(kwargs),
            num_returns,
            rex,
            retries if rex else 0,
            picks,
        )
        wire[0] = (
            pickle.dumps(header, protocol=5)
            if isinstance(rex, bool)
            else cloudpickle.dumps(header, protocol=5)
        )
        ref = _sunray.submit(
            self._name,
            wire,
            float(o["num_cpus"]) if o.get("num_cpus") is not None else 1.0,
            float(o.get("num_gpus") or 0.0),
            float(o.get("memory") or 0.0),
            [(k, float(v)) for k, v in (o.get("resources") or {}).items()],
            min(retries, 2**32 - 1),
            None,
            None,
            _bundle_of(o),
        )
        return ref.split(num_returns) if num_returns > 1 else ref


def remote(*args, **options):
    """``@sunray.remote`` or ``@sunray.remote(num_cpus=…, num_gpus=…, resources={…},
    max_retries=…, retry_exceptions=…, num_returns=…)`` on a function; on a class it
    makes an actor (see :class:`sunray._actor.ActorClass` for its options)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("remote() takes a function, or keyword options only")
    return lambda fn: _make_remote(fn, options)


from ._actor import get_actor, kill, method

_SUBMODULES = {"tune", "train", "air", "util"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"sunray has no {name!r}: this Ray API is not implemented by sunray")


def _make_remote(obj, options: dict):
    if isinstance(obj, type):
        from ._actor import ActorClass

        return ActorClass(obj, options)
    if not callable(obj):
        raise TypeError(f"@remote takes a function, got {type(obj).__name__}")
    return RemoteFunction(obj, options)
