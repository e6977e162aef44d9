"""Peewee models: the schema as it is today (store/migrations.py builds it, one
frozen step per version). Registered threads and runs, the feedback on runs,
the log of changes to the feedback, and the requests sent with a request_id.

Timestamps are integer microseconds since the Unix epoch (UTC), the same on
every backend. Ids are VARCHAR(128) so that the composite unique index fits
MySQL's key length limit.

A feedback's tags are stored twice, in the same transaction: in its own row
(`tags`, comma-separated), which every read returns, and one row each in
`feedback_tag`, which the tag filter and the tag counts read through indexes.
"""

from typing import Any

from peewee import (
    AutoField,
    BigAutoField,
    BigIntegerField,
    CharField,
    Check,
    CompositeKey,
    DatabaseProxy,
    ForeignKeyField,
    IntegerField,
    Model,
    ModelIndex,
    SmallIntegerField,
    TextField,
)

from feedback_service.core.records import (
    ID_MAX_LENGTH,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    TAG_MAX_LENGTH,
    TAGS_MAX,
)

# The `tags` column: up to TAGS_MAX tags joined by commas (no tag holds one).
TAG_SEPARATOR = ","
TAGS_COLUMN_LENGTH = TAGS_MAX * (TAG_MAX_LENGTH + 1)


def split_tags(column: str) -> tuple[str, ...]:
    """The tags a `tags` column holds, in the order given."""
    return tuple(column.split(TAG_SEPARATOR)) if column else ()


class _Proxy(DatabaseProxy):
    """Peewee's proxy, whose atomic() is the bound database's own, so that a
    dialect may follow how deep in atomic blocks a unit of work is
    (dialects.MySQLDialect.run_last)."""

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        return self.obj.atomic(*args, **kwargs)


# Bound once at start by store.database.open_database().
database = _Proxy()


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Thread(BaseModel):
    """A conversation; owner_user_id is '' for a shared thread."""

    thread_id = CharField(ID_MAX_LENGTH, primary_key=True)
    owner_user_id = CharField(ID_MAX_LENGTH, default="")
    created_at = BigIntegerField()


class Run(BaseModel):
    """One agent execution; run ids are unique across threads."""

    run_id = CharField(ID_MAX_LENGTH, primary_key=True)
    thread = ForeignKeyField(Thread, column_name="thread_id", backref="runs", on_delete="CASCADE")
    thread_id: str  # the key's value, without loading the thread (peewee's accessor)
    created_at = BigIntegerField()


class RunLabel(BaseModel):
    """One label of a run (`release=2026.12.1`), written with the run and
    never changed; deleted with it (ON DELETE CASCADE).

    A table of its own rather than a column of the run: selecting runs by a
    label (`key = value`) and grouping votes by a label's value are then
    index lookups and joins, whatever the number of runs."""

    # The primary key leads with the run: a run's labels, and the join from
    # a vote's run to the value of one of its labels.
    run = ForeignKeyField(Run, column_name="run_id", on_delete="CASCADE", index=False)
    key = CharField(LABEL_KEY_MAX_LENGTH)
    value = CharField(LABEL_VALUE_MAX_LENGTH)

    class Meta:
        table_name = "run_label"
        primary_key = CompositeKey("run", "key")
        indexes = (
            # The runs carrying a label: a selection's starting point.
            (("key", "value", "run_id"), False),
        )


class Feedback(BaseModel):
    """One user's rating of a run (message_id '') or of one of its messages.

    `id` orders rows oldest first and keys pagination; `feedback_id` is the
    public id.
    """

    id = BigAutoField()
    feedback_id = CharField(ID_MAX_LENGTH, unique=True)
    thread_id = CharField(ID_MAX_LENGTH)
    run = ForeignKeyField(Run, column_name="run_id", backref="feedback", on_delete="CASCADE")
    user_id = CharField(ID_MAX_LENGTH)
    message_id = CharField(ID_MAX_LENGTH, default="")
    rating = SmallIntegerField(constraints=[Check("rating IN (-1, 1)")])
    comment = TextField(default="")
    created_at = BigIntegerField()
    updated_at = BigIntegerField()
    # The tags, comma-separated in the order given; '' for none.
    tags = CharField(TAGS_COLUMN_LENGTH, default="")

    class Meta:
        indexes = (
            # One feedback per (thread, run, user, message); also serves a
            # user's own list of a run, and BatchGetCallerFeedback.
            (("thread_id", "run_id", "user_id", "message_id"), True),
            # ListFeedback for a service (every user), oldest first.
            (("thread_id", "run_id", "id"), False),
            # ListThreadFeedback for one user, oldest first.
            (("thread_id", "user_id", "id"), False),
        )


# Each of these answers its query from the index alone: no table rows are
# touched, however many feedback rows a run or thread has.
# Run stats: the votes (message_id '') and, with include_messages, each message.
STATS_INDEX = "feedback_run_stats"
Feedback.add_index(ModelIndex(Feedback, ("thread_id", "run_id", "message_id", "rating"), name=STATS_INDEX))
# Thread stats (the thread's votes, their runs) and a thread's time series
# (its votes in a range of created_at).
THREAD_VOTES_INDEX = "feedback_thread_votes"
Feedback.add_index(
    ModelIndex(
        Feedback, ("thread_id", "message_id", "created_at", "rating", "run_id"), name=THREAD_VOTES_INDEX
    )
)
# The time series of every thread: all votes in a range of created_at.
VOTES_BY_TIME_INDEX = "feedback_votes_by_time"
Feedback.add_index(ModelIndex(Feedback, ("message_id", "created_at", "rating"), name=VOTES_BY_TIME_INDEX))


class FeedbackTag(BaseModel):
    """One tag of one feedback, beside the feedback's own `tags` column: what
    the tag filter and the tag counts read. Written and replaced with the
    feedback in one transaction, deleted with it (ON DELETE CASCADE). The
    thread, run and message are copied from the feedback, which never moves."""

    # The primary key leads with the feedback's row id: it serves the cascade,
    # the replacement on upsert, and a list's "has this tag?" probe.
    feedback_row = ForeignKeyField(Feedback, column_name="feedback_row_id", on_delete="CASCADE", index=False)
    tag = CharField(TAG_MAX_LENGTH)
    thread_id = CharField(ID_MAX_LENGTH)
    run_id = CharField(ID_MAX_LENGTH)
    message_id = CharField(ID_MAX_LENGTH)

    class Meta:
        table_name = "feedback_tag"
        primary_key = CompositeKey("feedback_row", "tag")
        indexes = (
            # ListThreadFeedback of every user with a tag: that tag's rows,
            # oldest first.
            (("thread_id", "tag", "feedback_row_id"), False),
            # Tag counts of the votes (message_id ''), per run and per thread.
            (("thread_id", "message_id", "run_id", "tag"), False),
        )


# DeleteUserFeedback finds every feedback of a user, on any thread.
USER_INDEX = "feedback_user_id"
Feedback.add_index(ModelIndex(Feedback, ("user_id",), name=USER_INDEX))


class FeedbackChange(BaseModel):
    """One change to the feedback table, written in the transaction that made
    it. Its position in the log is (xact_id, id), and the log is read in that
    order (see store/changes.py): on PostgreSQL, xact_id is the writing
    transaction's id and `id` comes from a sequence; elsewhere xact_id is 0
    and `id` is taken from the log's head, dense and in commit order. It
    names the feedback; what the feedback holds is read from the feedback
    table when the change is streamed."""

    id = BigIntegerField(primary_key=True)
    kind = SmallIntegerField()  # ChangeKind
    feedback_id = CharField(ID_MAX_LENGTH)
    thread_id = CharField(ID_MAX_LENGTH)
    run_id = CharField(ID_MAX_LENGTH)
    user_id = CharField(ID_MAX_LENGTH)
    message_id = CharField(ID_MAX_LENGTH, default="")
    changed_at = BigIntegerField()
    xact_id = BigIntegerField(default=0)

    class Meta:
        indexes = (
            # The log in order, and a stream of one thread's changes.
            (("xact_id", "id"), False),
            (("thread_id", "xact_id", "id"), False),
        )


class FeedbackChangeLog(BaseModel):
    """The change log's head, one row (id 1): the log's random id, which
    cursors carry; where the log orders its changes by the head (SQLite,
    MySQL), the position of the newest change, which every writing
    transaction advances last, holding this row's lock until it commits; and
    the newest position pruned, (pruned_xact, pruned_through), older cursors
    being expired."""

    id = IntegerField(primary_key=True)
    log_id = CharField(32)
    last_change = BigIntegerField(default=0)
    pruned_through = BigIntegerField(default=0)
    pruned_xact = BigIntegerField(default=0)


class IdempotentRequest(BaseModel):
    """A request sent with a request_id, kept 24 hours: `key` digests the
    caller and the request_id, `fingerprint` the method and its fields, and
    `response` is what the first call answered (a created feedback as JSON,
    or '' for a delete)."""

    key = CharField(64, primary_key=True)
    user_id = CharField(ID_MAX_LENGTH)
    fingerprint = CharField(64)
    response = TextField()
    created_at = BigIntegerField()

    class Meta:
        indexes = (
            (("created_at",), False),  # pruning
            (("user_id",), False),  # erasure
        )


class SchemaVersion(BaseModel):
    """The schema version this database has been migrated to (one row)."""

    id = AutoField()
    version = IntegerField()


MODELS = (Thread, Run, RunLabel, Feedback, FeedbackTag, FeedbackChange, FeedbackChangeLog, IdempotentRequest)
