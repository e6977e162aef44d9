"""What a setting says about itself: its environment variable, the markers
its type carries, and what it accepts in words (for error lines and the
handbook's configuration page)."""

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from feedback_service.config.types import Accepts, Secret

PREFIX = "FEEDBACK_"


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable of a setting."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def markers(field: FieldInfo) -> list[object]:
    """The metadata of a setting's type, including inside `X | None`."""
    found = list(field.metadata)
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        for arg in get_args(annotation):
            found.extend(getattr(arg, "__metadata__", ()))
    return found


def base_type(field: FieldInfo) -> Any:
    """The setting's type without None and Annotated."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_secret(field: FieldInfo) -> bool:
    return any(isinstance(m, Secret) for m in markers(field))


def accepted(field: FieldInfo) -> str:
    """What a setting accepts, in words."""
    for marker in markers(field):
        if isinstance(marker, Accepts):
            return marker.text
    kind = base_type(field)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(kind))
    if kind is int:
        return "a whole number" + _range(field)
    if kind is float:
        return "a number" + _range(field)
    if kind is Path:
        return "a path"
    return "any text"


def _range(field: FieldInfo) -> str:
    bounds: dict[str, float] = {}
    for marker in markers(field):
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(marker, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(marker, name)
    low = f"{number(bounds['ge'])}" if "ge" in bounds else None
    high = f"{number(bounds['le'])}" if "le" in bounds else None
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if "gt" in bounds:
        return f" above {number(bounds['gt'])}" + (f", at most {high}" if high is not None else "")
    return f" from {low}" if low is not None else ""


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
