"""Queries whose SQL is generated once per database and shape, then only
bound to new values. Peewee renders a query in Python on every call, which
costs more than SQLite takes to answer it; the hot reads skip that."""

import dataclasses
import operator
from collections.abc import Callable, Sequence
from typing import Any

from peewee import Query

from feedback_service.store.models import database

Marker = str
# Where a value sits in the arguments: its position, then list indexes or
# dataclass field names down to it.
Path = tuple[int | str, ...]
# Takes the value at a path from the arguments; a constant has none.
Picker = Callable[[Sequence[Any]], Any]


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
        self._cache: dict[tuple[object, ...], tuple[str, list[tuple[Picker | None, Any]]]] = {}

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
        params = [pick(args) if pick else value for pick, value in bindings]
        return sql, params

    def _compile(self, args: Sequence[Any]) -> tuple[str, list[tuple[Picker | None, Any]]]:
        markers: dict[Marker, Path] = {}
        stand_ins = [_stand_in(arg, (position,), markers) for position, arg in enumerate(args)]
        sql, params = self._build(*stand_ins).sql()
        bindings: list[tuple[Picker | None, Any]] = [
            (_picker(markers[p]), None) if isinstance(p, str) and p in markers else (None, p) for p in params
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


# Types bound as one value, whose shape is their type (the common case, checked first).
_SCALARS = frozenset({str, int, float, bool, bytes})


def _shape(arg: Any) -> object:
    kind = type(arg)
    if kind in _SCALARS:
        return kind
    if arg is None:
        return None
    if isinstance(arg, list | tuple):
        # A list's items are all plain values (ids), or all pairs (labels):
        # the first one tells which, so a list of ids costs its length only.
        if arg and isinstance(arg[0], list | tuple):
            return tuple(_shape(item) for item in arg)
        return len(arg)
    fields = _fields_getter(kind)
    if fields is not None:
        return (kind, *map(_shape, fields(arg)))
    return kind


# For each dataclass argument's type, its field names and a getter of their
# values (as a tuple); None for any other type.
_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] | None] = {}


def _field_entry(kind: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] | None:
    if kind not in _FIELDS:
        names = tuple(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else ()
        # attrgetter of one name returns the value itself, not a 1-tuple.
        getter = (
            operator.attrgetter(*names) if len(names) > 1 else (lambda value: (getattr(value, names[0]),))
        )
        _FIELDS[kind] = (names, getter) if names else None
    return _FIELDS[kind]


def _field_names(kind: type) -> tuple[str, ...] | None:
    entry = _field_entry(kind)
    return None if entry is None else entry[0]


def _fields_getter(kind: type) -> Callable[[Any], tuple[Any, ...]] | None:
    entry = _field_entry(kind)
    return None if entry is None else entry[1]


def _picker(path: Path) -> Picker:
    """A function of the arguments that returns the value at `path`; made
    once per cached statement, so that binding walks no path."""
    position, *rest = path
    assert isinstance(position, int)
    if not rest:
        return operator.itemgetter(position)
    if len(rest) == 1 and isinstance(rest[0], str):
        name = rest[0]
        return lambda args: getattr(args[position], name)

    def pick(args: Sequence[Any]) -> Any:
        value = args[position]
        for step in rest:
            value = getattr(value, step) if isinstance(step, str) else value[step]
        return value

    return pick
