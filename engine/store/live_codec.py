"""The machine's live state as JSON, and back, across code versions.

Every leg, room and queue is a frozen dataclass of plain values, enums, nested dataclasses,
tuples and frozensets (``engine.machine.model``), so one generic codec turns any of them into JSON
and back from the class's type hints: nothing to keep in step by hand when a field is added.

Stored state carries ``LIVE_SCHEMA_VERSION``. The process that adopts live calls after a restart
may run newer code than the one that stored them: a field added since has a default and is
filled in; a change that a default cannot cover (a rename, a new meaning) raises the version and
adds an entry to ``UPGRADES`` that rewrites the older JSON. State written by a newer version than
this code knows is refused (``LiveStateError``) rather than half understood.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import orjson

LIVE_SCHEMA_VERSION = 1
# version -> how to rewrite a record of that version into the next one's shape.
UPGRADES: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

T = TypeVar("T")


class LiveStateError(ValueError):
    """Stored live state this code cannot read (a newer version, or damaged)."""


def to_plain(value: object) -> Any:
    """``value`` as JSON-ready data: dataclasses as objects, enums as their values, tuples and
    frozensets as arrays (frozensets sorted, so the same state always gives the same bytes)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted((to_plain(item) for item in value), key=orjson.dumps)
    return value


def from_plain(cls: type[T], data: Any) -> T:
    """The ``cls`` instance ``data`` describes (the reverse of ``to_plain``)."""
    try:
        return typing.cast(T, _build(cls, data))
    except (KeyError, TypeError, ValueError) as exc:
        raise LiveStateError(f"stored {cls.__name__} cannot be read: {exc}") from None


def dumps(value: object) -> bytes:
    return orjson.dumps({"v": LIVE_SCHEMA_VERSION, "state": to_plain(value)})


def loads(cls: type[T], raw: bytes | str) -> T:
    """Read what ``dumps`` wrote, upgrading it from an older schema version first."""
    try:
        record = orjson.loads(raw)
        version, state = int(record["v"]), record["state"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LiveStateError(f"stored {cls.__name__} is damaged: {exc}") from None
    if version > LIVE_SCHEMA_VERSION:
        raise LiveStateError(
            f"stored {cls.__name__} has live-state version {version}; this code reads up to "
            f"{LIVE_SCHEMA_VERSION}: run the newer version"
        )
    for step in range(version, LIVE_SCHEMA_VERSION):
        state = UPGRADES[step](state)
    return from_plain(cls, state)


def _build(tp: Any, data: Any) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if data is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _build(inner, data)
    if origin is tuple:
        item = get_args(tp)[0]
        return tuple(_build(item, element) for element in _list(data))
    if origin is frozenset:
        (item,) = get_args(tp)
        return frozenset(_build(item, element) for element in _list(data))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if isinstance(tp, type) and is_dataclass(tp):
        return _build_dataclass(tp, data)
    if tp is float and isinstance(data, int):
        return float(data)
    if tp in (str, int, float, bool) and not isinstance(data, tp):
        raise TypeError(f"expected {tp.__name__}, got {type(data).__name__}")
    return data


def _build_dataclass(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {cls.__name__}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            values[f.name] = _build(hints[f.name], data[f.name])
        elif f.default is MISSING and f.default_factory is MISSING:
            raise KeyError(f"{cls.__name__}.{f.name}")
    return cls(**values)


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise TypeError("expected an array")
    return data


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)
