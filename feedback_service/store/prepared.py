"""Queries whose SQL is generated once per database and shape, then only
bound to new values. Peewee renders a query in Python on every call, which
costs more than SQLite takes to answer it; the hot reads skip that."""

from collections.abc import Callable, Sequence
from typing import Any

from peewee import Query

from feedback_service.store.models import database

Marker = str
_CONSTANT = -1


def _marker(position: int, item: int | None = None) -> Marker:
    return f"\x00{position}" if item is None else f"\x00{position}.{item}"


class Prepared:
    """Wraps `build(*args) -> peewee query`. Calling it with real arguments
    returns (sql, params): the SQL comes from a cache keyed by the database
    class and the arguments' shape (None or not, list lengths)."""

    def __init__(self, build: Callable[..., Query]) -> None:
        self._build = build
        self._cache: dict[tuple[object, ...], tuple[str, list[tuple[int, Any]]]] = {}

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
        params = [
            value if position == _CONSTANT else _pick(args, position, value) for position, value in bindings
        ]
        return sql, params

    def _compile(self, args: Sequence[Any]) -> tuple[str, list[tuple[int, Any]]]:
        markers: dict[Marker, tuple[int, int | None]] = {}
        stand_ins: list[Any] = []
        for position, arg in enumerate(args):
            if arg is None:
                stand_ins.append(None)
            elif isinstance(arg, list | tuple):
                items = [_marker(position, i) for i in range(len(arg))]
                markers.update({m: (position, i) for i, m in enumerate(items)})
                stand_ins.append(items)
            else:
                markers[_marker(position)] = (position, None)
                stand_ins.append(_marker(position))
        sql, params = self._build(*stand_ins).sql()
        bindings = [markers[p] if isinstance(p, str) and p in markers else (_CONSTANT, p) for p in params]
        return sql, bindings


def _shape(arg: Any) -> object:
    if arg is None:
        return None
    if isinstance(arg, list | tuple):
        return len(arg)
    return type(arg)


def _pick(args: Sequence[Any], position: int, item: int | None) -> Any:
    return args[position] if item is None else args[position][item]
