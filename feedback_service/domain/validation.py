"""Request field checks. Each returns the cleaned value or raises InvalidArgument."""

import re

from feedback_service.domain.errors import FieldViolation, InvalidArgument
from feedback_service.domain.records import ID_MAX_LENGTH

ID_PATTERN = re.compile(rf"[A-Za-z0-9._:@|-]{{1,{ID_MAX_LENGTH}}}")
ID_RULE = f"1 to {ID_MAX_LENGTH} characters from A-Z a-z 0-9 . _ : @ | -"
COMMENT_MAX_LENGTH = 4096
RATINGS = (1, -1)
MAX_BATCH_RUNS = 100
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


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

    def request_id(self, value: str) -> str:
        """An optional request_id, lower-cased ('' when none was sent)."""
        if value and REQUEST_ID_PATTERN.fullmatch(value) is None:
            self.fail("request_id", "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000")
        return value.lower()

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)
