"""Request field checks. Each returns the cleaned value or raises InvalidArgument."""

import re
from collections.abc import Mapping, Sequence

from feedback_service.core.errors import FieldViolation, InvalidArgument, echoed
from feedback_service.core.records import (
    ID_MAX_LENGTH,
    LABEL_KEY_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
    LABELS_MAX,
    TAG_MAX_LENGTH,
    TAGS_MAX,
)
from feedback_service.domain.statistics import DEFAULT_CONFIDENCE

ID_PATTERN = re.compile(rf"[A-Za-z0-9._:@|-]{{1,{ID_MAX_LENGTH}}}")
ID_RULE = f"1 to {ID_MAX_LENGTH} characters from A-Z a-z 0-9 . _ : @ | -"
COMMENT_MAX_LENGTH = 4096
RATINGS = (1, -1)
MAX_BATCH_RUNS = 100
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A tag name in the vocabulary (FEEDBACK_TAGS): no commas, which join a
# feedback's tags in storage.
TAG_PATTERN = re.compile(rf"[a-z0-9_]{{1,{TAG_MAX_LENGTH}}}")
TAG_RULE = f"1 to {TAG_MAX_LENGTH} characters from a-z 0-9 _"
# The vocabulary when FEEDBACK_TAGS is unset: the original router's reasons.
DEFAULT_TAGS = ("incorrect", "not_as_expected", "slow", "style_tone", "safety_legal", "other")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)


# A run label's key: a lower-case identifier.
LABEL_KEY_PATTERN = re.compile(rf"[a-z][a-z0-9_]{{0,{LABEL_KEY_MAX_LENGTH - 1}}}")
LABEL_KEY_RULE = f"a key must match [a-z][a-z0-9_]{{0,{LABEL_KEY_MAX_LENGTH - 1}}}"
# Control characters (Unicode category Cc: C0, DEL and C1), refused in values.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A key quoted in a field name (`labels[key]`) is cut to this many characters.
LABEL_KEY_QUOTE = 40

# A request_id (AIP-155): a UUID in its usual 8-4-4-4-12 hex form, any case.
REQUEST_ID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


class Checker:
    """Collects every violation of a request, then raises them together."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def id(self, field: str, value: str, *, required: bool = True) -> str:
        if not value and not required:
            return value
        if not is_valid_id(value):
            self.fail(field, f"must be {ID_RULE}" if value else "is required")
        return value

    def rating(self, value: int) -> int:
        if value not in RATINGS:
            self.fail("rating", "must be 1 (thumbs up) or -1 (thumbs down)")
        return value

    def rating_filter(self, value: int) -> int | None:
        """None for 0 (both ratings)."""
        if value not in (0, *RATINGS):
            self.fail("rating", "must be 1 (thumbs up), -1 (thumbs down) or 0 (both)")
        return value or None

    def tags(self, values: Sequence[str], vocabulary: Sequence[str]) -> tuple[str, ...]:
        if len(values) > TAGS_MAX:
            self.fail("tags", f"must hold at most {TAGS_MAX} tags")
        seen: set[str] = set()
        known = vocabulary  # named once, with the first unknown tag
        for index, value in enumerate(values):
            if value not in vocabulary:
                self.fail(f"tags[{index}]", _unknown_tag(value, known))
                known = ()
            elif value in seen:
                self.fail(f"tags[{index}]", f"repeats tag {_shown_tag(value)}")
            seen.add(value)
        return tuple(values)

    def tag(self, value: str, vocabulary: Sequence[str]) -> str:
        """One tag to filter by; '' for none."""
        if value and value not in vocabulary:
            self.fail("tag", _unknown_tag(value, vocabulary))
        return value

    def timestamp(self, field: str, value: tuple[int, int] | None, *, required: bool = False) -> int | None:
        """A google.protobuf.Timestamp's (seconds, nanos) as microseconds,
        rounded up (a bound given in nanoseconds keeps its meaning); None when
        unset and not required."""
        if value is None:
            if required:
                self.fail(field, "is required")
            return None
        seconds, nanos = value
        if not (TIMESTAMP_SECONDS[0] <= seconds <= TIMESTAMP_SECONDS[1] and 0 <= nanos < 1_000_000_000):
            self.fail(field, "must be a valid timestamp, from year 1 to year 9999")
            return None
        return seconds * 1_000_000 + -(-nanos // 1000)

    def comment(self, value: str) -> str:
        if len(value) > COMMENT_MAX_LENGTH:
            self.fail("comment", f"must be at most {COMMENT_MAX_LENGTH} characters")
        elif "\x00" in value:
            self.fail("comment", "must not contain NUL characters")
        return value

    def page_size(self, value: int) -> int:
        if value < 0:
            self.fail("page_size", "must not be negative")
        if value == 0:
            return DEFAULT_PAGE_SIZE
        return min(value, MAX_PAGE_SIZE)

    def run_ids(self, values: list[str]) -> list[str]:
        if not 1 <= len(values) <= MAX_BATCH_RUNS:
            self.fail("run_ids", f"must hold 1 to {MAX_BATCH_RUNS} run ids")
        for index, value in enumerate(values):
            self.id(f"run_ids[{index}]", value)
        return list(values)

    def labels(self, field: str, values: Mapping[str, str], *, required: bool = False) -> dict[str, str]:
        """Run labels, or a selection of runs by labels: at most LABELS_MAX,
        each key a lower-case identifier, each value 1 to
        LABEL_VALUE_MAX_LENGTH characters with no control character. A bad
        label is named `field[key]`."""
        if len(values) > LABELS_MAX:
            self.fail(field, f"must hold at most {LABELS_MAX} labels")
        elif required and not values:
            self.fail(field, "is required: name at least one label")
        for key in sorted(values):
            value = values[key]
            if LABEL_KEY_PATTERN.fullmatch(key) is None:
                self.fail(f"{field}[{_shown_key(key)}]", LABEL_KEY_RULE)
            elif not 1 <= len(value) <= LABEL_VALUE_MAX_LENGTH:
                self.fail(f"{field}[{key}]", f"the value must have 1 to {LABEL_VALUE_MAX_LENGTH} characters")
            elif CONTROL_CHARACTERS.search(value):
                self.fail(f"{field}[{key}]", "the value must not contain control characters")
        return dict(values)

    def label_key(self, field: str, value: str) -> str:
        """One label key (required)."""
        if not value:
            self.fail(field, "is required")
        elif LABEL_KEY_PATTERN.fullmatch(value) is None:
            self.fail(field, f"must match [a-z][a-z0-9_]{{0,{LABEL_KEY_MAX_LENGTH - 1}}}")
        return value

    def confidence(self, value: float) -> float:
        """A confidence level: 0 means DEFAULT_CONFIDENCE; else strictly
        between 0.5 and 1 (NaN is neither)."""
        if value == 0:
            return DEFAULT_CONFIDENCE
        if not 0.5 < value < 1:
            self.fail("confidence", "must be 0 (for 0.95) or strictly between 0.5 and 1")
        return value

    def request_id(self, value: str) -> str:
        """An optional request_id, lower-cased ('' when none was sent)."""
        if value and REQUEST_ID_PATTERN.fullmatch(value) is None:
            self.fail("request_id", "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
        return value.lower()

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)


# At most this many bytes of a caller's tag are quoted: a request may hold many
# bad tags, and error details travel in trailers that clients cap at 8 KB.
TAG_QUOTE_BYTES = 40


def _shown_tag(value: str) -> str:
    """A caller's tag as a message quotes it, its escapes counted: every
    valid tag fits whole, a longer or stranger value is cut (with an ellipsis)."""
    shown = value[:TAG_QUOTE_BYTES]
    while len(echoed(shown).encode()) > TAG_QUOTE_BYTES + 2:  # + the quotes
        shown = shown[:-1]
    return echoed(shown) + ("\u2026" if shown != value else "")


def _shown_key(key: str) -> str:
    """A caller's label key as a field name quotes it: as sent when it is
    short and printable, else escaped and cut (a field name travels in
    trailers)."""
    if len(key) <= LABEL_KEY_QUOTE and key.isprintable() and key.isascii() and "]" not in key:
        return key
    return echoed(key[:LABEL_KEY_QUOTE])


def _unknown_tag(value: str, vocabulary: Sequence[str]) -> str:
    known = f"; known tags: {', '.join(vocabulary)}" if vocabulary else ""
    return f"unknown tag {_shown_tag(value)}{known}"


def vocabulary(spec: str) -> tuple[str, ...]:
    """The tag vocabulary from `name,name2,...` (FEEDBACK_TAGS); ValueError
    names what is wrong with it."""
    tags = tuple(name.strip() for name in spec.split(",") if name.strip())
    if not tags:
        raise ValueError("FEEDBACK_TAGS names no tag")
    for name in tags:
        if not TAG_PATTERN.fullmatch(name):
            raise ValueError(f"FEEDBACK_TAGS: tag {echoed(name)} must be {TAG_RULE}")
    if len(set(tags)) != len(tags):
        raise ValueError("FEEDBACK_TAGS names a tag twice")
    return tags
