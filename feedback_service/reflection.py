"""Server reflection that keeps the proto comments.

protoc's Python output drops source info, so the stock reflection service
serves descriptors without comments. We serve our files from the descriptor
set generated with --include_source_info, so `grpcurl describe` shows the
documentation; every other file comes from the default pool as usual.
"""

from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

DESCRIPTOR_SET = ("feedback.v1", "descriptor_set.binpb")


def documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Our proto files, with comments, by file name."""
    package, name = DESCRIPTOR_SET
    data = resources.files(package).joinpath(name).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {f.name: f for f in files if f.source_code_info.location}


class _DocumentedFile:
    """A file descriptor whose CopyToProto keeps source info when we have it."""

    def __init__(
        self, file: descriptor.FileDescriptor, documented: dict[str, descriptor_pb2.FileDescriptorProto]
    ) -> None:
        self._descriptor = file
        self._documented = documented
        self.name = file.name

    @property
    def dependencies(self) -> list["_DocumentedFile"]:
        return [_DocumentedFile(d, self._documented) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        if self.name in self._documented:
            proto.CopyFrom(self._documented[self.name])
        else:
            self._descriptor.CopyToProto(proto)


class DocumentedPool:
    """The default descriptor pool, answering file look-ups with documented files."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()
        self._documented = documented_files()

    def FindFileByName(self, name: str) -> _DocumentedFile:  # noqa: N802
        return _DocumentedFile(self._pool.FindFileByName(name), self._documented)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:  # noqa: N802
        try:
            descriptor = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            # The C pool does not index methods, which `grpcurl describe` asks for.
            descriptor = self._pool.FindMethodByName(symbol).containing_service.file
        return _DocumentedFile(descriptor, self._documented)

    def __getattr__(self, name: str) -> Any:  # whatever the default pool has
        return getattr(self._pool, name)


def enable_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    names = [*service_names, reflection.SERVICE_NAME]
    # Not a DescriptorPool, but it answers every look-up reflection makes of one.
    reflection.enable_server_reflection(names, server, pool=DocumentedPool())  # type: ignore[arg-type]  # see above
