"""How Python values travel: pickle protocol 5 with out-of-band buffers.

A value is one ``bytes`` object, its first byte a tag:

- ``V``: an in-band pickle (small values, no large buffers);
- ``B``: a pickle whose large buffers (numpy arrays, ``bytes``-like data) follow it,
  each 64-byte aligned, so that loading maps them without copying (read-only, as Ray's);
- ``E``: a task's exception (:func:`error_payload`), raised again where it is loaded.

cloudpickle pickles what plain pickle cannot (functions and classes of ``__main__``,
lambdas, closures); plain pickle takes the common scalar types, which is faster.
"""

from __future__ import annotations

import os
import pickle
import struct
import traceback

import cloudpickle

from .exceptions import TaskError

VALUE = 0x56  # b"V"
BUFFERS = 0x42  # b"B"
ERROR = 0x45  # b"E"

_ALIGN = 64
_PLAIN = (type(None), bool, int, float, str, bytes)
_U64 = struct.Struct("<Q")


def dumps(value) -> bytes:
    if type(value) in _PLAIN:
        return b"V" + pickle.dumps(value, protocol=5)
    buffers: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    if not buffers:
        return b"V" + head
    raws = [b.raw() for b in buffers]
    parts = [b"B", _U64.pack(len(raws)), _U64.pack(len(head))]
    parts += [_U64.pack(r.nbytes) for r in raws]
    parts.append(head)
    size = sum(len(p) for p in parts)
    for r in raws:
        pad = -size % _ALIGN
        if pad:
            parts.append(bytes(pad))
        parts.append(r)
        size += pad + r.nbytes
    return b"".join(parts)


def loads(data: bytes):
    """The value in ``data``; raises the task's error for an error payload."""
    tag = data[0]
    view = memoryview(data)
    if tag == VALUE:
        return pickle.loads(view[1:])
    if tag == BUFFERS:
        (n,) = _U64.unpack_from(data, 1)
        (head_len,) = _U64.unpack_from(data, 9)
        lens = [_U64.unpack_from(data, 17 + 8 * i)[0] for i in range(n)]
        pos = 17 + 8 * n
        head = view[pos : pos + head_len]
        pos += head_len
        buffers = []
        for length in lens:
            pos += -pos % _ALIGN
            buffers.append(view[pos : pos + length])
            pos += length
        return pickle.loads(head, buffers=buffers)
    if tag == ERROR:
        raise load_error(data)
    raise ValueError(f"not a sunray value (tag {tag:#x})")


def is_error(data: bytes) -> bool:
    return data[0] == ERROR


def error_payload(exc: BaseException, function_name: str, node_ip: str, skip: int = 0) -> bytes:
    """An exception raised by a task, with its traceback (less its first ``skip``
    frames: the worker's own) and where it ran."""
    tb_obj = exc.__traceback__
    for _ in range(skip):
        if tb_obj is not None and tb_obj.tb_next is not None:
            tb_obj = tb_obj.tb_next
    tb = "".join(traceback.format_exception(type(exc), exc, tb_obj))
    info = {
        "message": f"{type(exc).__name__}: {exc}",
        "function_name": function_name,
        "traceback": tb,
        "node_ip": node_ip,
        "pid": os.getpid(),
        "hostname": os.uname().nodename,
        "cause_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
    }
    exc.__traceback__ = None
    try:
        cause = cloudpickle.dumps(exc, protocol=5)
        pickle.loads(cause)
    except Exception:  # noqa: BLE001 (any failure: the exception is sent as text only)
        cause = None
    info["cause"] = cause
    return b"E" + pickle.dumps(info, protocol=5)


def load_error(data: bytes) -> TaskError:
    info = pickle.loads(memoryview(data)[1:])
    cause = None
    if info["cause"] is not None:
        try:
            cause = pickle.loads(info["cause"])
        except Exception:  # noqa: BLE001 (a class this side lacks: the text remains)
            cause = None
    err = TaskError(
        info["message"],
        function_name=info["function_name"],
        traceback_str=info["traceback"],
        node_ip=info["node_ip"],
        pid=info["pid"],
        cause=cause,
        cause_class=info["cause_class"],
    )
    return err.as_instanceof_cause()
