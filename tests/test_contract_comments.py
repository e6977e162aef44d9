"""The contract is the documentation: every service, RPC, message, field, enum
and enum value of feedback.v1 carries a leading comment, which `grpcurl
describe` shows to the people who call us. Read from the descriptor set that
server reflection serves."""

from collections.abc import Iterator

from google.protobuf import descriptor_pb2

from feedback_service.reflection import documented_files

# Field numbers of FileDescriptorProto, DescriptorProto, ... in
# google/protobuf/descriptor.proto, which SourceCodeInfo paths are made of.
FILE_MESSAGES, FILE_ENUMS, FILE_SERVICES, FILE_EXTENSIONS = 4, 5, 6, 7
MESSAGE_FIELDS, MESSAGE_NESTED, MESSAGE_ENUMS = 2, 3, 4
ENUM_VALUES = 2
SERVICE_METHODS = 2


def elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source path, full name) of every documented element of a file."""
    package = file.package

    def message(path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto, scope: str):
        name = f"{scope}.{proto.name}"
        yield path, name
        for i, field in enumerate(proto.field):
            yield (*path, MESSAGE_FIELDS, i), f"{name}.{field.name}"
        for i, nested in enumerate(proto.nested_type):
            if not nested.options.map_entry:
                yield from message((*path, MESSAGE_NESTED, i), nested, name)
        for i, enum_type in enumerate(proto.enum_type):
            yield from enum((*path, MESSAGE_ENUMS, i), enum_type, name)

    def enum(path: tuple[int, ...], proto: descriptor_pb2.EnumDescriptorProto, scope: str):
        name = f"{scope}.{proto.name}"
        yield path, name
        for i, value in enumerate(proto.value):
            yield (*path, ENUM_VALUES, i), f"{name}.{value.name}"

    for i, proto in enumerate(file.message_type):
        yield from message((FILE_MESSAGES, i), proto, package)
    for i, proto in enumerate(file.enum_type):
        yield from enum((FILE_ENUMS, i), proto, package)
    for i, service in enumerate(file.service):
        yield (FILE_SERVICES, i), f"{package}.{service.name}"
        for j, method in enumerate(service.method):
            yield (FILE_SERVICES, i, SERVICE_METHODS, j), f"{package}.{service.name}.{method.name}"
    for i, extension in enumerate(file.extension):
        yield (FILE_EXTENSIONS, i), f"{package}.{extension.name}"


def test_every_element_of_the_contract_has_a_comment():
    files = {name: f for name, f in documented_files().items() if name.startswith("feedback/v1/")}
    assert {
        "feedback/v1/feedback.proto",
        "feedback/v1/thread_registry.proto",
        "feedback/v1/access.proto",
    } <= set(files)
    undocumented = []
    for file in files.values():
        comments = {
            tuple(location.path): location.leading_comments.strip()
            for location in file.source_code_info.location
        }
        undocumented += [name for path, name in elements(file) if not comments.get(path)]
    assert undocumented == []
