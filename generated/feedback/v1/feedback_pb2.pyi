import datetime

from feedback.v1 import access_pb2 as _access_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TimeBucket(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIME_BUCKET_UNSPECIFIED: _ClassVar[TimeBucket]
    TIME_BUCKET_HOUR: _ClassVar[TimeBucket]
    TIME_BUCKET_DAY: _ClassVar[TimeBucket]
TIME_BUCKET_UNSPECIFIED: TimeBucket
TIME_BUCKET_HOUR: TimeBucket
TIME_BUCKET_DAY: TimeBucket

class Feedback(_message.Message):
    __slots__ = ("feedback_id", "thread_id", "run_id", "user_id", "message_id", "rating", "comment", "created_at", "updated_at", "tags")
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    feedback_id: str
    thread_id: str
    run_id: str
    user_id: str
    message_id: str
    rating: int
    comment: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feedback_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., user_id: _Optional[str] = ..., message_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_id", "rating", "comment", "message_id", "tags")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    rating: int
    comment: str
    message_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., message_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_id", "rating", "comment", "message_id", "tags")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    rating: int
    comment: str
    message_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., message_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ListFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_id", "page_size", "page_token", "rating", "has_comment", "tag", "created_after", "created_before", "user_id")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    HAS_COMMENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    page_size: int
    page_token: str
    rating: int
    has_comment: bool
    tag: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    user_id: str
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., rating: _Optional[int] = ..., has_comment: _Optional[bool] = ..., tag: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListFeedbackResponse(_message.Message):
    __slots__ = ("feedback", "next_page_token")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    feedback: _containers.RepeatedCompositeFieldContainer[Feedback]
    next_page_token: str
    def __init__(self, feedback: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetFeedbackStatsRequest(_message.Message):
    __slots__ = ("thread_id", "run_id", "include_messages")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    include_messages: bool
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., include_messages: _Optional[bool] = ...) -> None: ...

class FeedbackStats(_message.Message):
    __slots__ = ("run_id", "total", "positive", "negative", "tags", "messages")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    total: int
    positive: int
    negative: int
    tags: _containers.RepeatedCompositeFieldContainer[TagCount]
    messages: _containers.RepeatedCompositeFieldContainer[MessageStats]
    def __init__(self, run_id: _Optional[str] = ..., total: _Optional[int] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[TagCount, _Mapping]]] = ..., messages: _Optional[_Iterable[_Union[MessageStats, _Mapping]]] = ...) -> None: ...

class TagCount(_message.Message):
    __slots__ = ("tag", "count")
    TAG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    tag: str
    count: int
    def __init__(self, tag: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MessageStats(_message.Message):
    __slots__ = ("message_id", "total", "positive", "negative")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    total: int
    positive: int
    negative: int
    def __init__(self, message_id: _Optional[str] = ..., total: _Optional[int] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ...) -> None: ...

class DeleteFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_id", "feedback_id")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    feedback_id: str
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ..., feedback_id: _Optional[str] = ...) -> None: ...

class DeleteRunFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_id")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_id: str
    def __init__(self, thread_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class DeleteFeedbackResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: _Optional[bool] = ...) -> None: ...

class ListThreadFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "page_size", "page_token", "rating", "has_comment", "tag", "created_after", "created_before", "user_id")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    HAS_COMMENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    page_size: int
    page_token: str
    rating: int
    has_comment: bool
    tag: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    user_id: str
    def __init__(self, thread_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., rating: _Optional[int] = ..., has_comment: _Optional[bool] = ..., tag: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListThreadFeedbackResponse(_message.Message):
    __slots__ = ("feedback", "next_page_token")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    feedback: _containers.RepeatedCompositeFieldContainer[Feedback]
    next_page_token: str
    def __init__(self, feedback: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchGetFeedbackStatsRequest(_message.Message):
    __slots__ = ("thread_id", "run_ids", "include_messages")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    include_messages: bool
    def __init__(self, thread_id: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., include_messages: _Optional[bool] = ...) -> None: ...

class BatchGetFeedbackStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[FeedbackStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[FeedbackStats, _Mapping]]] = ...) -> None: ...

class BatchGetCallerFeedbackRequest(_message.Message):
    __slots__ = ("thread_id", "run_ids")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, thread_id: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetCallerFeedbackResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[CallerRunFeedback]
    def __init__(self, runs: _Optional[_Iterable[_Union[CallerRunFeedback, _Mapping]]] = ...) -> None: ...

class CallerRunFeedback(_message.Message):
    __slots__ = ("run_id", "run_feedback", "message_feedback")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_feedback: Feedback
    message_feedback: _containers.RepeatedCompositeFieldContainer[Feedback]
    def __init__(self, run_id: _Optional[str] = ..., run_feedback: _Optional[_Union[Feedback, _Mapping]] = ..., message_feedback: _Optional[_Iterable[_Union[Feedback, _Mapping]]] = ...) -> None: ...

class GetThreadFeedbackStatsRequest(_message.Message):
    __slots__ = ("thread_id",)
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ...) -> None: ...

class ThreadFeedbackStats(_message.Message):
    __slots__ = ("thread_id", "total", "positive", "negative", "tags", "runs_with_feedback")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    RUNS_WITH_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    total: int
    positive: int
    negative: int
    tags: _containers.RepeatedCompositeFieldContainer[TagCount]
    runs_with_feedback: int
    def __init__(self, thread_id: _Optional[str] = ..., total: _Optional[int] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[TagCount, _Mapping]]] = ..., runs_with_feedback: _Optional[int] = ...) -> None: ...

class GetFeedbackTimeSeriesRequest(_message.Message):
    __slots__ = ("thread_id", "bucket", "start_time", "end_time")
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    bucket: TimeBucket
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, thread_id: _Optional[str] = ..., bucket: _Optional[_Union[TimeBucket, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetFeedbackTimeSeriesResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[TimeSeriesBucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[TimeSeriesBucket, _Mapping]]] = ...) -> None: ...

class TimeSeriesBucket(_message.Message):
    __slots__ = ("start_time", "positive", "negative")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    positive: int
    negative: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ...) -> None: ...
