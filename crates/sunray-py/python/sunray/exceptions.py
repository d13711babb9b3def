"""sunray's exceptions, with Ray's names as aliases (``RayTaskError``, ``GetTimeoutError``…).

The Rust extension raises these by name (``sunray._sunray`` maps its errors here in one
place); a task's own exception comes back as a :class:`TaskError` that is also an
instance of the task's exception class, so ``except ValueError`` works as with Ray.
"""

from __future__ import annotations


class SunrayError(Exception):
    """Base of every error sunray raises."""


class ConfigError(SunrayError, ValueError):
    """A setting or argument sunray cannot use (the message says which and why)."""


class ClusterConnectionError(SunrayError, ConnectionError):
    """The head cannot be reached, or the connection to it was lost."""


class AuthenticationError(ClusterConnectionError):
    """The head refused this driver: a wrong token or another protocol version."""


class GetTimeoutError(SunrayError, TimeoutError):
    """``get`` did not get every value within its timeout."""


class ObjectTooLargeError(SunrayError, ValueError):
    """A value larger than the largest message sunray sends (``SUNRAY_MAX_MESSAGE_MB``)."""


class TuneError(SunrayError):
    """A tuning run could not go on: a wrong setting, an unreadable experiment, a failed
    search-space or stop function (Ray's ``TuneError``)."""


class _RuntimeTaskError(SunrayError):
    """A task that failed outside its own code: its worker or node died, its worker did
    not start, an object it needs is lost. ``function_name`` and ``location`` ("node N
    (ip), pid P") say which. ``str()`` is the message alone (one sentence, whatever
    else the error carries)."""

    def __init__(self, message: str, function_name: str | None = None, location=None, kind=None):
        super().__init__(message)
        self.function_name = function_name
        self.location = location
        self.kind = kind


class ObjectLostError(_RuntimeTaskError):
    """An object is gone: released, never created, or kept only by a worker or node
    that died (a put's value cannot be made again; a task's result is, by running the
    task again). The message names the object and what was lost."""


class WorkerCrashedError(_RuntimeTaskError):
    """The worker process running a task died, more often than its ``max_retries``."""


class NodeDiedError(_RuntimeTaskError):
    """The node running a task left the cluster, more often than its ``max_retries``."""


class ActorDiedError(_RuntimeTaskError):
    """The actor of a method call is dead: killed, its constructor raised, its driver
    left, or its process or node died with no restarts left (Ray's ``ActorDiedError``).
    The message names the actor and why it died."""


class WorkerStartError(_RuntimeTaskError):
    """A node could not start a worker for the task (its interpreter is missing there)."""


class TaskError(SunrayError):
    """An exception raised by a task, as Ray's ``RayTaskError``.

    ``cause`` is the original exception (when it could be pickled), ``traceback_str`` the
    remote traceback, ``function_name``, ``node_ip`` and ``pid`` where it ran. ``get``
    raises it as an instance of both this class and the cause's class.
    """

    def __init__(
        self,
        message: str,
        function_name: str | None = None,
        traceback_str: str | None = None,
        node_ip: str | None = None,
        pid: int | None = None,
        cause: BaseException | None = None,
        cause_class: str | None = None,
    ):
        # Not super(): in a class that also derives from the cause's, that would run the
        # cause's __init__ on the message.
        Exception.__init__(self, message)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.node_ip = node_ip
        self.pid = pid
        self.cause = cause
        self.cause_class = cause_class

    def __str__(self) -> str:
        if self.traceback_str is None:
            return str(self.args[0]) if self.args else ""
        head = f"{self.function_name}() (pid={self.pid}, ip={self.node_ip})"
        return f"{head}\n{self.traceback_str.rstrip()}"

    def __reduce__(self):
        return (
            _rebuild_task_error,
            (
                self.args[0] if self.args else "",
                self.function_name,
                self.traceback_str,
                self.node_ip,
                self.pid,
                self.cause,
                self.cause_class,
            ),
        )

    def as_instanceof_cause(self) -> TaskError:
        """This error as an instance of a class deriving from both ``TaskError`` and the
        cause's class (Ray's ``RayTaskError.as_instanceof_cause``)."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError):
            return cause if isinstance(cause, TaskError) else self
        cls = type(cause)
        try:
            both = _dual_class(cls)
            err = both.__new__(both)
            TaskError.__init__(
                err,
                self.args[0] if self.args else "",
                self.function_name,
                self.traceback_str,
                self.node_ip,
                self.pid,
                cause,
                self.cause_class,
            )
            # Attributes of the cause (errno, filename, custom fields) stay readable.
            for k, v in getattr(cause, "__dict__", {}).items():
                if k not in _OWN_FIELDS:
                    err.__dict__[k] = v
            err.__cause__ = None
            return err
        except TypeError:
            # A class that cannot be subclassed (final, or a C type with a layout of its
            # own): plain TaskError, with the cause attached.
            return self


_DUAL: dict[type, type] = {}
_OWN_FIELDS = {"function_name", "traceback_str", "node_ip", "pid", "cause", "cause_class"}


def _dual_class(cls: type) -> type:
    both = _DUAL.get(cls)
    if both is None:
        both = type(
            f"TaskError({cls.__name__})",
            (TaskError, cls),
            {
                "__init__": TaskError.__init__,
                "__str__": TaskError.__str__,
                "__reduce__": TaskError.__reduce__,
                "__module__": __name__,
            },
        )
        _DUAL[cls] = both
    return both


def _rebuild_task_error(*args) -> TaskError:
    return TaskError(*args).as_instanceof_cause()


def _from_runtime(class_name, message, function_name, location, kind):
    """What the extension raises for a task that failed in the runtime (not its code)."""
    cls = globals()[class_name]
    if cls is TaskError:
        return TaskError(message, function_name=function_name)
    return cls(message, function_name, location, kind)


# Ray's names, so that ``from ray.exceptions import RayTaskError`` ports unchanged.
RayError = SunrayError
RayTaskError = TaskError
RayActorError = ActorDiedError
RaySystemError = ClusterConnectionError
ObjectStoreFullError = ObjectTooLargeError

__all__ = [
    "ActorDiedError",
    "AuthenticationError",
    "ClusterConnectionError",
    "ConfigError",
    "GetTimeoutError",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "ObjectTooLargeError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "SunrayError",
    "TaskError",
    "TuneError",
    "WorkerCrashedError",
    "WorkerStartError",
]
