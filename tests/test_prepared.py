"""Prepared statements say exactly what Peewee would: for random arguments of
every prepared query of the store, on each dialect, the cached SQL and the
parameters bound to it equal Peewee's own `.sql()` of the query built from
those arguments. A builder whose SQL depends on an argument's value, or that
transforms a value before binding it, fails here.

No database is reached: a query's SQL is rendered by the dialect's class
(for MySQL, as for a server whose version is not known yet)."""

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_service.core.records import ListQuery
from feedback_service.store import changes, deletes, reads, requests, stats, thread_rule, threads, writes
from feedback_service.store.dialects import dialect_database
from feedback_service.store.models import database
from feedback_service.store.prepared import Prepared

DIALECT_URLS = {
    "sqlite": "sqlite:///:memory:",
    "postgres": "postgresql://nobody@127.0.0.1:1/unused",
    "mysql": "mysql://nobody@127.0.0.1:1/unused",
}

# Bucket widths of the time series, whose statements are made per width.
SERIES_WIDTHS = (60_000_000, 3_600_000_000)

text = st.text(max_size=12)
numbers = st.integers(min_value=-(2**62), max_value=2**62)
ratings = st.sampled_from([-1, 1])
run_ids = st.lists(text, max_size=4)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | strategy


# One INSERTED_COLUMNS row: feedback_id .. message_id, rating, comment,
# created_at, updated_at, tags (joined).
inserted_values = st.tuples(text, text, text, text, text, ratings, text, numbers, numbers, text).map(list)
# A ListQuery as the domain builds it: every field set or left to keep everything.
list_queries = st.builds(
    ListQuery,
    thread_id=text,
    run_id=maybe(text),
    user_id=maybe(text),
    rating=maybe(ratings),
    has_comment=maybe(st.booleans()),
    tag=maybe(text),
    created_after=maybe(numbers),
    created_before=maybe(numbers),
)
# query, after_id, limit
page_args = st.tuples(list_queries, numbers, st.integers(1, 1000))
caller_args = st.tuples(text, text, run_ids, st.integers(1, 1000))
# A run-label selection as the store passes it: its keys and its values, in key order.
selections = st.dictionaries(text, text, max_size=3).map(
    lambda chosen: ([key for key in sorted(chosen)], [chosen[key] for key in sorted(chosen)])
)
# An export's query: any thread or every thread (None), a selection of runs, no user.
export_queries = st.builds(
    lambda query, thread_id, labels: dataclasses.replace(
        query, thread_id=thread_id, run_id=None, user_id=None, run_labels=tuple(sorted(labels.items()))
    ),
    list_queries,
    maybe(text),
    st.dictionaries(text, text, max_size=3),
)
export_args = st.tuples(export_queries, numbers, st.integers(1, 1000))

# The arguments of each prepared query, as its callers pass them, by name (a
# tuple's or a dict's members share their name).
ARGUMENTS: dict[str, st.SearchStrategy[tuple]] = {
    "thread_rule._THREAD_OWNER": st.tuples(text),
    "threads._LOCKED_THREAD": st.tuples(text),
    "deletes._LOCKED_RUNS": st.tuples(text),
    "threads._RUN_THREAD": st.tuples(text),
    "writes._INSERT_IF_RUN": st.tuples(text, text, maybe(text), inserted_values),
    "writes._UPSERT_IF_RUN": st.tuples(text, text, maybe(text), inserted_values),
    "writes._BY_KEY": st.tuples(text, text, text, text),
    "writes._INSERT_TAGS": st.tuples(text, text, text, text, st.lists(text, min_size=1, max_size=4)),
    "writes._DELETE_TAGS": st.tuples(numbers),
    "deletes._DELETE_ONE": st.tuples(text, text, text, text, maybe(text)),
    "deletes._DELETE_RUN": st.tuples(text, text, text, maybe(text)),
    "deletes._DELETE_THREAD": st.tuples(text),
    "deletes._DELETE_USER": st.tuples(text),
    "reads._PAGE": page_args,
    "reads._PAGE_WITH_OWNER": page_args,
    "reads._CALLER_FEEDBACK": caller_args,
    "reads._CALLER_FEEDBACK_WITH_OWNER": caller_args,
    "stats._STATS": st.tuples(text, run_ids),
    "stats._STATS_WITH_OWNER": st.tuples(text, run_ids),
    "stats._THREAD_STATS": st.tuples(text),
    "stats._THREAD_STATS_WITH_OWNER": st.tuples(text),
    "stats._SERIES": st.tuples(maybe(text), numbers, numbers),
    "stats._SERIES_WITH_OWNER": st.tuples(text, numbers, numbers),
    "stats._LABEL_VOTES": st.tuples(maybe(text), selections, maybe(text), maybe(numbers), maybe(numbers)).map(
        lambda args: (args[0], *args[1], *args[2:])
    ),
    "stats._LABEL_VOTES_WITH_OWNER": st.tuples(
        text, maybe(text), selections, maybe(numbers), maybe(numbers)
    ).map(lambda args: (args[0], args[1], *args[2], *args[3:])),
    "reads._EXPORT": export_args,
    "reads._LABELS_OF_RUNS": st.tuples(st.lists(text, min_size=1, max_size=4)),
    "changes._ADVANCE": st.tuples(st.integers(1, 10_000)),
    "changes._INSERT_ONE": st.tuples(
        numbers, st.sampled_from([1, 2, 3]), text, text, text, text, text, numbers
    ),
    "changes._INSERT_ONE_XACT": st.tuples(st.sampled_from([1, 2, 3]), text, text, text, text, text, numbers),
    "changes._PAGE": st.tuples(numbers, numbers, maybe(text), st.integers(1, 1000)),
    "changes._OLDEST": st.tuples(st.integers(1, 1000)),
    "changes._DELETE_THROUGH": st.tuples(numbers, numbers),
    "changes._PRUNED_THROUGH": st.tuples(numbers, numbers),
    "requests._CLAIM": st.tuples(text, text, text, text, numbers),
    "requests._CLAIMED": st.tuples(text),
    "requests._EXPIRE": st.tuples(text, numbers),
    "requests._PRUNE": st.tuples(numbers),
    "requests._FORGET_USER": st.tuples(text),
}


def prepared_queries() -> Iterator[tuple[str, str, Prepared]]:
    """(name, label, query) of every Prepared the store's modules hold, alone
    or in a tuple or dict (the time series' for SERIES_WIDTHS)."""
    for width in SERIES_WIDTHS:
        stats._series_statements(width)
    for module in (thread_rule, threads, writes, deletes, reads, stats, changes, requests):
        prefix = module.__name__.rsplit(".", 1)[1]
        for attribute, value in vars(module).items():
            name = f"{prefix}.{attribute}"
            if isinstance(value, Prepared):
                yield name, name, value
            members = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, tuple)
                else ()
            )
            for key, member in members:
                if isinstance(member, Prepared):
                    yield name, f"{name}[{key!r}]", member


PREPARED = list(prepared_queries())


def test_every_prepared_query_has_its_arguments_described():
    """A prepared query added without a strategy for its arguments fails here."""
    assert {name for name, _, _ in PREPARED} == set(ARGUMENTS)


@pytest.fixture(params=list(DIALECT_URLS))
def dialect(request):
    """The models bound to a dialect's database, never connected; bound back after."""
    previous = database.obj
    database.initialize(dialect_database(DIALECT_URLS[request.param]))
    yield request.param
    database.initialize(previous)


@pytest.mark.parametrize(
    ("name", "query"), [(n, q) for n, _, q in PREPARED], ids=[label for _, label, _ in PREPARED]
)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_prepared_sql_and_parameters_are_peewees(dialect, name, query, data):
    prepared = _fresh(query, dialect)
    args = data.draw(ARGUMENTS[name], label="arguments")
    assert prepared(*args) == prepared.build(*args).sql()


# A Prepared of each builder per dialect, with its own cache. The store's own
# instances are shared with the other tests: their caches may hold SQL from a
# connected server, whose version Peewee's MySQL SQL follows (VALUE() or
# VALUES() in an upsert), and must not be filled from an unconnected one here.
_FRESH: dict[tuple[int, str], Prepared] = {}


def _fresh(query: Prepared, dialect: str) -> Prepared:
    return _FRESH.setdefault((id(query), dialect), Prepared(query.build))
