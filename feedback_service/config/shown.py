"""A setting's value as it may be shown: in `config`'s listing and the
handbook (secrets masked), and in the one line that refuses a bad value
(cut, escaped, never a secret)."""

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from feedback_service.config.fields import accepted, is_secret, markers, number, variable
from feedback_service.config.types import DURATION, IDENTITIES

QUOTE_LIMIT = 64


class SettingError(ValueError):
    """A setting the service cannot run with; the message is one line, safe to print."""


def shown_value(field: FieldInfo, value: object) -> str:
    """A setting's value as its variable would be set, secrets masked."""
    if value is None or value == {}:
        return ""
    if is_secret(field):
        return _masked_url(str(value)) if isinstance(value, str) and "://" in str(value) else "********"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _duration_text(value) if DURATION in markers(field) else number(value)
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dict):
        pairs = [(v, k) if IDENTITIES in markers(field) else (k, v) for k, v in value.items()]
        return ",".join(f"{k}={v}" for k, v in pairs)
    return str(value)


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return number(seconds)


def _masked_url(url: str) -> str:
    """A URL with its password masked; entirely masked when it does not parse."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "********"


def quoted(field: FieldInfo, value: object) -> str:
    """A bad value as an error may quote it: cut, escaped, never a secret."""
    if is_secret(field):
        text = _masked_url(value) if isinstance(value, str) and "://" in value else None
        if text is None:
            return "(a secret, not shown)"
        value = text
    text = value if isinstance(value, str) else str(value)
    if len(text) > QUOTE_LIMIT:
        text = text[:QUOTE_LIMIT] + "\u2026"
    return ascii(text)


def describe_errors(exc: ValidationError, fields: Mapping[str, FieldInfo]) -> str:
    """One line for the first bad setting of these (the model's fields), naming
    the others if there are more."""
    by_key = {}
    for name, field in fields.items():
        by_key[name] = by_key[variable(name, field)] = (name, field)
    lines = []
    for error in exc.errors():
        location = error["loc"]
        if not location or location[0] not in by_key:  # a rule across settings names them itself
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        name, field = by_key[str(location[0])]
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(
            f"{variable(name, field)}={quoted(field, error['input'])} is not accepted ({_short(reason)}): "
            f"expected {accepted(field)}"
        )
    more = f" (and {len(lines) - 1} more bad settings)" if len(lines) > 1 else ""
    return lines[0] + more


def _short(reason: str) -> str:
    """pydantic's reason, lower-cased and without the value it may quote."""
    reason = reason.split(",", 1)[0] if reason.startswith("Input should be a valid") else reason
    reason = reason.replace("Input should be", "should be")
    return (reason[:1].lower() + reason[1:]).replace("\n", " ")
