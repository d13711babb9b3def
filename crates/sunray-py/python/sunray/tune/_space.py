"""Ray Tune's search space functions. Each returns a ``Domain``: a plain description
that sunray-tune's Rust searchers sample from (nothing is sampled in Python, except the
functions given to ``sample_from``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def to_json(value: Any) -> Any:
    """``value`` as JSON data (numpy scalars and arrays become numbers and lists)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(v: Any) -> Any:
    item = getattr(v, "item", None)
    if callable(item) and getattr(v, "shape", None) == ():
        return item()
    tolist = getattr(v, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    raise TypeError(
        f"{type(v).__name__} values cannot be in a sunray search space or config "
        "(they must be numbers, strings, booleans, None, lists or dicts); pass other "
        "objects to the trainable with tune.with_parameters"
    )


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


class Domain:
    """One parameter's distribution, as Ray's ``tune.search.sample.Domain``."""

    def __init__(self, kind: str, **params: Any):
        self.kind = kind
        self.params = params

    def spec(self, funcs: list) -> dict:
        if self.kind == "sample_from":
            funcs.append(self.params["func"])
            return {"kind": "sample_from", "func": len(funcs) - 1}
        p = dict(self.params)
        if "values" in p:
            p["values"] = to_json(list(p["values"]))
        return {"kind": self.kind, **p}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.kind}({args})"


def _num(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return v


def _order(fn: str, lower: float, upper: float, strict: bool = True) -> None:
    if lower > upper or (strict and lower == upper):
        raise ValueError(f"{fn}: lower ({lower}) must be below upper ({upper})")


def _q(fn: str, q: Any) -> float:
    q = _num("q", q)
    if q <= 0:
        raise ValueError(f"{fn}: q must be > 0, got {q}")
    return q


def uniform(lower: float, upper: float) -> Domain:
    lo, hi = _num("lower", lower), _num("upper", upper)
    _order("uniform", lo, hi)
    return Domain("uniform", lower=lo, upper=hi, q=None)


def quniform(lower: float, upper: float, q: float) -> Domain:
    lo, hi = _num("lower", lower), _num("upper", upper)
    _order("quniform", lo, hi)
    return Domain("uniform", lower=lo, upper=hi, q=_q("quniform", q))


def loguniform(lower: float, upper: float, base: float = 10) -> Domain:
    lo, hi = _num("lower", lower), _num("upper", upper)
    if lo <= 0:
        raise ValueError(f"loguniform: lower must be > 0, got {lo}")
    _order("loguniform", lo, hi)
    return Domain("loguniform", lower=lo, upper=hi, base=_num("base", base), q=None)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Domain:
    d = loguniform(lower, upper, base)
    d.params["q"] = _q("qloguniform", q)
    return d


def randint(lower: int, upper: int) -> Domain:
    """An integer in ``[lower, upper)`` (upper excluded, as Ray)."""
    lo, hi = _int("lower", lower), _int("upper", upper)
    _order("randint", lo, hi)
    return Domain("randint", lower=lo, upper=hi, q=None)


def qrandint(lower: int, upper: int, q: int = 1) -> Domain:
    """A multiple of ``q`` in ``[lower, upper]`` (upper included, as Ray)."""
    lo, hi = _int("lower", lower), _int("upper", upper)
    _order("qrandint", lo, hi, strict=False)
    q = _int("q", q)
    if q <= 0:
        raise ValueError(f"qrandint: q must be > 0, got {q}")
    return Domain("randint", lower=lo, upper=hi, q=q)


def lograndint(lower: int, upper: int, base: float = 10) -> Domain:
    lo, hi = _int("lower", lower), _int("upper", upper)
    if lo <= 0:
        raise ValueError(f"lograndint: lower must be > 0, got {lo}")
    _order("lograndint", lo, hi)
    return Domain("lograndint", lower=lo, upper=hi, base=_num("base", base))


def randn(mean: float = 0.0, sd: float = 1.0) -> Domain:
    sd = _num("sd", sd)
    if sd <= 0:
        raise ValueError(f"randn: sd must be > 0, got {sd}")
    return Domain("randn", mean=_num("mean", mean), sd=sd, q=None)


def qrandn(mean: float, sd: float, q: float) -> Domain:
    d = randn(mean, sd)
    d.params["q"] = _q("qrandn", q)
    return d


def choice(categories) -> Domain:
    values = list(categories)
    if not values:
        raise ValueError("choice needs at least one value")
    to_json(values)
    return Domain("choice", values=values)


def grid_search(values) -> dict:
    """Every value in its own trial (Ray's form: ``{"grid_search": values}``)."""
    values = list(values)
    if not values:
        raise ValueError("grid_search needs at least one value")
    to_json(values)
    return {"grid_search": values}


def sample_from(func: Callable) -> Domain:
    """A value computed by ``func(spec)``; ``spec.config`` holds the parameters drawn
    so far. numpy's and ``random``'s global generators are seeded per trial first."""
    if not callable(func):
        raise TypeError(f"sample_from takes a function, got {type(func).__name__}")
    return Domain("sample_from", func=func)


def space_spec(space: dict, funcs: list) -> list:
    """The JSON description of a ``param_space`` dict for the Rust tuner."""
    if not isinstance(space, dict):
        raise TypeError(f"param_space must be a dict, got {type(space).__name__}")
    return [[str(k), _leaf(v, funcs)] for k, v in space.items()]


def _leaf(v: Any, funcs: list) -> dict:
    if isinstance(v, Domain):
        return v.spec(funcs)
    if isinstance(v, dict):
        if set(v) == {"grid_search"}:
            return {"kind": "grid", "values": to_json(list(v["grid_search"]))}
        return {"kind": "nested", "items": space_spec(v, funcs)}
    return {"kind": "const", "value": to_json(v)}
