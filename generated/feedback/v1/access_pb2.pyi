from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Permission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERMISSION_UNSPECIFIED: _ClassVar[Permission]
    PERMISSION_THREADS_READ: _ClassVar[Permission]
    PERMISSION_THREADS_WRITE: _ClassVar[Permission]
    PERMISSION_THREADS_DELETE: _ClassVar[Permission]

class ThreadAccess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THREAD_ACCESS_UNSPECIFIED: _ClassVar[ThreadAccess]
    THREAD_ACCESS_NONE: _ClassVar[ThreadAccess]
    THREAD_ACCESS_READ: _ClassVar[ThreadAccess]
    THREAD_ACCESS_WRITE: _ClassVar[ThreadAccess]

class Caller(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALLER_UNSPECIFIED: _ClassVar[Caller]
    CALLER_ANY: _ClassVar[Caller]
    CALLER_USER: _ClassVar[Caller]
    CALLER_SERVICE: _ClassVar[Caller]
PERMISSION_UNSPECIFIED: Permission
PERMISSION_THREADS_READ: Permission
PERMISSION_THREADS_WRITE: Permission
PERMISSION_THREADS_DELETE: Permission
THREAD_ACCESS_UNSPECIFIED: ThreadAccess
THREAD_ACCESS_NONE: ThreadAccess
THREAD_ACCESS_READ: ThreadAccess
THREAD_ACCESS_WRITE: ThreadAccess
CALLER_UNSPECIFIED: Caller
CALLER_ANY: Caller
CALLER_USER: Caller
CALLER_SERVICE: Caller
ACCESS_FIELD_NUMBER: _ClassVar[int]
access: _descriptor.FieldDescriptor

class AccessRule(_message.Message):
    __slots__ = ("permission", "thread_access", "caller")
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    THREAD_ACCESS_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    permission: Permission
    thread_access: ThreadAccess
    caller: Caller
    def __init__(self, permission: _Optional[_Union[Permission, str]] = ..., thread_access: _Optional[_Union[ThreadAccess, str]] = ..., caller: _Optional[_Union[Caller, str]] = ...) -> None: ...
