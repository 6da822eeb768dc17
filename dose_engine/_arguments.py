"""Type checks of public-API arguments: a wrong type is a TypeError naming the argument.

Without them a ``None`` passed for a patient surfaces deep inside as ``'NoneType' object
has no attribute 'structures'``.  :func:`check_arguments` declares, next to a public
function, what each argument must be::

    @check_arguments(grid=Grid, density=ARRAY, cache_dir=optional(PATH))
    def cached_influence_matrix(density, grid, ..., cache_dir=None): ...

A spec is a class or tuple of classes (``isinstance``), a ``"module:Name"`` string for a
class that cannot be imported where the function is defined (resolved at the first call),
one of :data:`PATH`, :data:`ARRAY`, :data:`NUMBER`, :data:`TEXT`, or built with
:func:`optional` / :func:`sequence_of`.  ``rtplan`` uses the same helpers
(``rtplan/_internal/arguments.py``); ``optimizers`` may not import ``dose_engine`` and checks its
one kind of argument (a ``Problem``) itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ARRAY",
    "NUMBER",
    "PATH",
    "INTEGER",
    "TEXT",
    "check_argument",
    "check_arguments",
    "either",
    "optional",
    "path_argument",
    "require_instance",
    "sequence_of",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Longest quoted value in an argument error (characters).
_QUOTE_CHARS = 80


def _quote(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}… ({len(text):,} chars)"


def _refuse(value: object, name: str, what: str) -> TypeError:
    return TypeError(f"`{name}` must be {what}; got {type(value).__name__} {_quote(value)}.")


@dataclass(frozen=True)
class _Kind:
    """A named check that is not a plain ``isinstance``."""

    what: str
    test: Callable[[object], bool]
    allow_none: bool = False
    item: Any = None  # element spec of sequence_of


def _is_path(v: object) -> bool:
    return isinstance(v, str | os.PathLike) and not isinstance(v, bytes)


def _is_array(v: object) -> bool:
    """A numeric array (numpy, CuPy or any array-API object) or a nested list of numbers."""
    if v is None or isinstance(v, str | bytes | dict | set):
        return False
    dtype = getattr(v, "dtype", None)
    if dtype is not None and hasattr(v, "shape"):
        return getattr(dtype, "kind", "f") in "biuf"
    if not isinstance(v, numbers.Number | Sequence | np.generic) and not hasattr(v, "__array__"):
        return False
    try:
        arr = np.asarray(v)
    except (TypeError, ValueError):
        return False
    return arr.dtype.kind in "biuf"


def _is_number(v: object) -> bool:
    if type(v) is float or type(v) is int or isinstance(v, numbers.Real):
        return True
    return (
        getattr(v, "ndim", None) == 0 and getattr(getattr(v, "dtype", None), "kind", "") in "biuf"
    )


#: A filesystem path: ``str`` or ``os.PathLike`` (not bytes, not empty).
PATH = _Kind("a path (str or os.PathLike)", _is_path)
#: A numeric array: numpy, CuPy, array-API, or a (nested) sequence of numbers.
ARRAY = _Kind("a numeric array", _is_array)
#: A real number (Python, numpy scalar or 0-d array).
NUMBER = _Kind("a real number", _is_number)
#: An integer (Python or numpy; ``bool`` is refused).
INTEGER = _Kind("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool))
#: A ``str``.
TEXT = _Kind("a str", lambda v: isinstance(v, str))


def either(*specs: Any) -> _Kind:
    """Any one of ``specs``."""

    def test(v: object) -> bool:
        for spec in specs:
            try:
                check_argument(v, "_", spec)
            except (TypeError, ValueError):
                continue
            return True
        return False

    return _Kind(" or ".join(_describe(s) for s in specs), test)


def optional(spec: Any) -> _Kind:
    """``spec`` or ``None``."""
    what = _describe(spec)
    return _Kind(f"{what} or None", lambda v: True, allow_none=True, item=spec)


def sequence_of(spec: Any) -> _Kind:
    """A list, tuple or other non-string iterable whose elements (if it is a sequence)
    all satisfy ``spec``."""
    what = f"a sequence of {_describe(spec).removeprefix('an ').removeprefix('a ')}"
    return _Kind(
        what, lambda v: isinstance(v, Iterable) and not isinstance(v, str | bytes), item=spec
    )


@functools.cache
def _resolve_name(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _resolve(spec: Any) -> Any:
    if isinstance(spec, str):
        return _resolve_name(spec)
    if isinstance(spec, tuple):
        return tuple(_resolve(s) for s in spec)
    return spec


def _class_name(cls: type) -> str:
    if cls.__module__ in ("builtins", "collections.abc"):
        return cls.__name__
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def _describe(spec: Any) -> str:
    if isinstance(spec, _Kind):
        return spec.what
    spec = _resolve(spec)
    classes = spec if isinstance(spec, tuple) else (spec,)
    names = [_class_name(c) for c in classes]
    article = "an" if names[0][0].lower() in "aeiou" else "a"
    return f"{article} {' or '.join(names)}"


def check_argument(value: object, name: str, spec: Any) -> None:
    """Raise TypeError naming ``name`` unless ``value`` satisfies ``spec``.

    ``spec`` as for :func:`check_arguments`.  An empty path is a ValueError.
    """
    if type(spec) is not _Kind:
        cls = _resolve(spec)
        if not isinstance(value, cls):
            raise _refuse(value, name, _describe(cls))
        return
    if spec.allow_none:
        if value is not None:
            check_argument(value, name, spec.item)
        return
    if not spec.test(value):
        raise _refuse(value, name, spec.what)
    if spec is PATH and isinstance(value, str) and not value.strip():
        raise ValueError(f"`{name}` is an empty path.")
    item = spec.item
    if item is not None and isinstance(value, Sequence):
        if type(item) is _Kind and not item.allow_none and item.item is None:
            for i, v in enumerate(value):  # the common case, without recursion
                if not item.test(v):
                    raise _refuse(v, f"{name}[{i}]", item.what)
        else:
            for i, v in enumerate(value):
                check_argument(v, f"{name}[{i}]", item)


def check_arguments(**specs: Any) -> Callable[[F], F]:
    """Decorate a public function so that each named argument is checked at every call.

    Arguments left at their default are not checked; unnamed arguments never are.  On a
    class (a dataclass), its ``__init__`` is checked.
    """

    def decorate(fn: F) -> F:
        if inspect.isclass(fn):
            fn.__init__ = decorate(fn.__init__)  # type: ignore[method-assign]
            return fn
        params = inspect.signature(fn).parameters
        unknown = set(specs) - set(params)
        if unknown:  # a typo here would silently check nothing
            raise AssertionError(f"{fn.__qualname__} has no argument(s) {sorted(unknown)}")
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        order = [n for n, p in params.items() if p.kind in positional]
        # (name, position or None for keyword-only, spec), in the signature's order
        checks = [
            (n, order.index(n) if n in order else None, specs[n]) for n in params if n in specs
        ]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for name, pos, spec in checks:
                if name in kwargs:
                    check_argument(kwargs[name], name, spec)
                elif pos is not None and pos < len(args):
                    check_argument(args[pos], name, spec)
            return fn(*args, **kwargs)  # missing or extra arguments: Python's TypeError

        return wrapper  # type: ignore[return-value]

    return decorate


def require_instance(value: object, name: str, cls: type | tuple[type, ...], what: str) -> None:
    """Raise TypeError naming ``name`` unless ``value`` is an instance of ``cls``.

    ``what`` says what is expected, e.g. ``"an rtplan.Patient (from rtplan.load_patient)"``.
    """
    if not isinstance(value, cls):
        raise _refuse(value, name, what)


def path_argument(value: object, name: str) -> Path:
    """``Path(value)`` for a ``str`` or ``os.PathLike`` argument, else a TypeError naming it
    (an empty string is a ValueError)."""
    check_argument(value, name, PATH)
    return Path(value)  # type: ignore[arg-type]
