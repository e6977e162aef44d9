"""Pages of large feedback stay within a byte budget, so a client with gRPC's
default 4 MiB receive limit can page through all of it."""

import pytest

from feedback.v1 import feedback_pb2 as pb
from feedback_service.domain.pagination import FEEDBACK_OVERHEAD_BYTES, PAGE_BYTE_BUDGET, within_budget
from feedback_service.domain.validation import COMMENT_MAX_LENGTH
from tests.harness import as_service, as_user, register

USERS = 300
COMMENT = "🙂" * COMMENT_MAX_LENGTH  # 4 bytes each in UTF-8: 16 KiB
DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024


@pytest.fixture
def crowded(client) -> list[str]:
    """300 users' longest comments on one run of a shared thread; their ids in order."""
    register(client, "t-big", "", ["r-big"])
    return [
        client.feedback.UpsertFeedback(
            pb.UpsertFeedbackRequest(thread_id="t-big", run_id="r-big", rating=1, comment=COMMENT),
            metadata=as_user(f"user-{i:03d}"),
        ).feedback_id
        for i in range(USERS)
    ]


def pages(call, request) -> list:
    """Every page, following next_page_token until it is empty."""
    found = []
    while True:
        page = call(request, metadata=as_service())
        found.append(page)
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


LISTINGS = {
    "ListFeedback": lambda c: (
        c.feedback.ListFeedback,
        pb.ListFeedbackRequest(thread_id="t-big", run_id="r-big"),
    ),
    "ListThreadFeedback": lambda c: (
        c.feedback.ListThreadFeedback,
        pb.ListThreadFeedbackRequest(thread_id="t-big"),
    ),
}


@pytest.mark.parametrize("listing", LISTINGS)
def test_pages_stay_within_the_byte_budget_and_return_everything_once(client, crowded, listing):
    call, request = LISTINGS[listing](client)
    request.page_size = 1000
    found = pages(call, request)  # through a channel with the default 4 MiB receive limit
    sizes = [pb.ListFeedbackResponse(feedback=page.feedback).ByteSize() for page in found]
    assert sum(sizes) > DEFAULT_CLIENT_LIMIT  # as one page, a default client would refuse it
    assert max(sizes) <= PAGE_BYTE_BUDGET
    assert all(page.feedback for page in found)
    listed = [feedback for page in found for feedback in page.feedback]
    assert [feedback.feedback_id for feedback in listed] == crowded  # all, once, oldest first
    assert [feedback.user_id for feedback in listed] == [f"user-{i:03d}" for i in range(USERS)]


def test_a_page_holds_at_least_one_feedback_whatever_its_size():
    assert within_budget([COMMENT], budget=1) == 1
    assert within_budget([COMMENT, ""], budget=1) == 1
    assert within_budget([]) == 0


def test_the_budget_counts_comment_bytes_not_characters():
    one = FEEDBACK_OVERHEAD_BYTES + len(COMMENT.encode())
    assert within_budget([COMMENT] * 3, budget=2 * one) == 2
    assert within_budget(["a" * COMMENT_MAX_LENGTH] * 3, budget=2 * one) == 3
