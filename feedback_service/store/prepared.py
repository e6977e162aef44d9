"""Queries whose SQL is generated once per database and shape, then only
bound to new values. Peewee renders a query in Python on every call, which
costs more than SQLite takes to answer it; the hot reads skip that."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from peewee import Query

from feedback_service.store.models import database

Marker = str
# Where a value sits in the arguments: its position, then list indexes or
# dataclass field names down to it.
Path = tuple[int | str, ...]
_CONSTANT: Path = ()


def _marker(path: Path) -> Marker:
    return "\x00" + ".".join(str(step) for step in path)


class Prepared:
    """Wraps `build(*args) -> peewee query`. Calling it with real arguments
    returns (sql, params): the SQL comes from a cache keyed by the database
    class and the arguments' shape (None or not, list lengths, and the same
    of each field of a frozen dataclass, such as a ListQuery). The builder
    may test a value against None and iterate a list, never look at a value
    itself: it is handed markers that stand for the values."""

    def __init__(self, build: Callable[..., Query]) -> None:
        self._build = build
        self._cache: dict[tuple[object, ...], tuple[str, list[tuple[Path, Any]]]] = {}

    @property
    def build(self) -> Callable[..., Query]:
        """The query builder, whose own `.sql()` the cached SQL must equal."""
        return self._build

    def __call__(self, *args: Any) -> tuple[str, list[Any]]:
        shape = (type(database.obj), *(_shape(arg) for arg in args))
        entry = self._cache.get(shape)
        if entry is None:
            entry = self._cache[shape] = self._compile(args)
        sql, bindings = entry
        params = [_pick(args, path) if path else value for path, value in bindings]
        return sql, params

    def _compile(self, args: Sequence[Any]) -> tuple[str, list[tuple[Path, Any]]]:
        markers: dict[Marker, Path] = {}
        stand_ins = [_stand_in(arg, (position,), markers) for position, arg in enumerate(args)]
        sql, params = self._build(*stand_ins).sql()
        bindings = [
            (markers[p], None) if isinstance(p, str) and p in markers else (_CONSTANT, p) for p in params
        ]
        return sql, bindings


def _stand_in(value: Any, path: Path, markers: dict[Marker, Path]) -> Any:
    """`value` with a marker in place of each value the SQL binds."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        items = [_stand_in(item, (*path, index), markers) for index, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    names = _field_names(type(value))
    if names is not None:
        changes = {name: _stand_in(getattr(value, name), (*path, name), markers) for name in names}
        return dataclasses.replace(value, **changes)
    marker = _marker(path)
    markers[marker] = path
    return marker


def _shape(arg: Any) -> object:
    if arg is None:
        return None
    if isinstance(arg, list | tuple):
        # A list's items are all plain values (ids), or all pairs (labels):
        # the first one tells which, so a list of ids costs its length only.
        if arg and isinstance(arg[0], list | tuple):
            return tuple(_shape(item) for item in arg)
        return len(arg)
    names = _field_names(type(arg))
    if names is not None:
        return (type(arg), *(_shape(getattr(arg, name)) for name in names))
    return type(arg)


# The field names of each dataclass argument's type; None for any other type.
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    if kind not in _FIELD_NAMES:
        is_record = dataclasses.is_dataclass(kind)
        _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind)) if is_record else None
    return _FIELD_NAMES[kind]


def _pick(args: Sequence[Any], path: Path) -> Any:
    value: Any = args
    for step in path:
        value = getattr(value, step) if isinstance(step, str) else value[step]
    return value
