"""What a remote function, an actor's constructor or an actor's method accepts, checked
at ``.remote(...)`` as Ray does (``inspect.Signature.bind``): a call that cannot bind
raises ``TypeError`` in the caller, not later in a worker.

A :class:`Signature` is made once per function, actor class or method. A call that
plainly fits costs a few comparisons (under a µs); ``bind`` runs only for the others
(positional-only or ``*args`` parameters with keywords, and calls that do not fit, to
say why in ``bind``'s words).
"""

from __future__ import annotations

import inspect
import types

_P = inspect.Parameter
# A parameter's kind travels as its index here.
_KINDS = (
    _P.POSITIONAL_ONLY,
    _P.POSITIONAL_OR_KEYWORD,
    _P.VAR_POSITIONAL,
    _P.KEYWORD_ONLY,
    _P.VAR_KEYWORD,
)
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
# Parameters an argument may name.
_NAMED = (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)


class Signature:
    """Parameters reduced to what binding needs: (name, kind, has a default). Pickles
    whatever the defaults are (actor handles carry their methods' signatures)."""

    __slots__ = (
        "_keyword_required",
        "_keywords",
        "_least",
        "_most",
        "_required",
        "_sig",
        "_var_keyword",
        "params",
    )

    def __init__(self, params: tuple[tuple[str, int, bool], ...]):
        self.params = params
        self._sig: inspect.Signature | None = None
        kinds = [_KINDS[k] for _, k, _ in params]
        positional = [d for (_, _, d), k in zip(params, kinds) if k in _POSITIONAL]
        # For the fast check (see `mismatch`): how many positional arguments fit (the
        # ones without a default come first), whether a keyword-only one is required,
        # and, for signatures without positional-only or *args parameters, where each
        # keyword goes and which parameters need a value.
        self._least = positional.count(False)
        self._most = float("inf") if _P.VAR_POSITIONAL in kinds else len(positional)
        self._keyword_required = any(
            k == _P.KEYWORD_ONLY and not d for (_, _, d), k in zip(params, kinds)
        )
        named = [(i, n, d) for i, ((n, _, d), k) in enumerate(zip(params, kinds)) if k in _NAMED]
        simple = _P.POSITIONAL_ONLY not in kinds and _P.VAR_POSITIONAL not in kinds
        self._keywords = {n: i for i, n, _ in named} if simple else None
        self._required = tuple((i, n) for i, n, d in named if not d)
        self._var_keyword = _P.VAR_KEYWORD in kinds

    @classmethod
    def of(cls, fn, drop_first: bool = False) -> Signature | None:
        """``fn``'s signature (without its first parameter: ``self``), or None when
        Python cannot tell (some builtins): such calls are not checked here."""
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return None
        if drop_first and params and params[0].kind in _POSITIONAL:
            params = params[1:]
        return cls(tuple((p.name, _KINDS.index(p.kind), p.default is not p.empty) for p in params))

    @classmethod
    def of_method(cls, owner: type, name: str) -> Signature | None:
        """A method as called on an instance: ``self`` dropped, a static or class
        method as it is; None for other callables (the worker checks those)."""
        raw = inspect.getattr_static(owner, name, None)
        if isinstance(raw, (staticmethod, classmethod)):
            return cls.of(getattr(owner, name))
        if isinstance(raw, types.FunctionType):
            return cls.of(raw, drop_first=True)
        return None

    def mismatch(self, args: tuple, kwargs: dict) -> str | None:
        """Why ``args`` and ``kwargs`` do not fit (``bind``'s words), or None."""
        n = len(args)
        if n <= self._most:
            if not kwargs:
                if n >= self._least and not self._keyword_required:
                    return None
            elif self._keywords is not None and self._fits_keywords(n, kwargs):
                return None
        sig = self._sig
        if sig is None:
            sig = self._sig = inspect.Signature(
                [_P(n, _KINDS[k], default=None if d else _P.empty) for n, k, d in self.params]
            )
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            return str(e)
        return None

    def _fits_keywords(self, n: int, kwargs: dict) -> bool:
        keywords = self._keywords
        for k in kwargs:
            i = keywords.get(k)
            if i is None:
                if not self._var_keyword:
                    return False
            elif i < n:
                return False
        return all(i < n or name in kwargs for i, name in self._required)

    def __reduce__(self):
        return (Signature, (self.params,))
