"""The types of settings: each a Python type, its validators and markers.

A validator's ValueError says what is wrong with a value; the `Accepts`
marker says, in words, what is accepted instead (error lines and the
handbook quote it)."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import NoDecode

from feedback_service.auth.credentials import SCOPE_PERMISSIONS
from feedback_service.auth.keys import keys_from_jwks, keys_from_pem
from feedback_service.domain.validation import vocabulary

# The database URL schemes the store has a dialect for (store/dialects/).
DATABASE_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "postgresql+pool",
    "postgres+pool",
    "mysql",
    "mysql+pool",
)
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


# Markers a setting's type may carry (in its Annotated metadata).
@dataclass(frozen=True)
class Accepts:
    """What the setting accepts, in words: its error messages and its
    documentation say this."""

    text: str


@dataclass(frozen=True)
class Secret:
    """The value is never shown: not in an error, not by `config`."""


@dataclass(frozen=True)
class EmptyIsAValue:
    """An empty value is a value, not `unset` (as it is for every other setting)."""


def parse_named_values(spec: str) -> dict[str, str]:
    """`name=value,name2=value2` -> {name: value} (values may contain '=')."""
    pairs: dict[str, str] = {}
    for position, entry in enumerate(filter(None, (part.strip() for part in spec.split(","))), 1):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or not value.strip():
            # Never quote the entry: in FEEDBACK_SERVICE_TOKENS it may be a token.
            raise ValueError(f"entry {position} is not name=value")
        pairs[name.strip()] = value.strip()
    return pairs


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


# Validators of the setting types below. Their ValueError says what is wrong;
# the accepted forms come from the type's Accepts marker.
def _flag(value: object) -> object:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise ValueError("not a yes/no word")
    return value


def address(value: str) -> str:
    """`host:port` checked (ValueError says what is wrong)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("no port" if not port.isdigit() else "not an address")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("an IPv6 host must be in brackets")
    return value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError("no such file" if not value.exists() else "not a file")
    return value


def _directory(value: Path) -> Path:
    """A directory, or one that can be made: its nearest existing ancestor is one."""
    existing = value
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError("not a directory" if existing == value else "a parent is not a directory")
    return value


def _database_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in DATABASE_SCHEMES:
        raise ValueError("unsupported scheme" if scheme else "not a URL")
    if scheme == "sqlite" and value.removeprefix("sqlite:///") not in ("", ":memory:"):
        _directory(Path(value.removeprefix("sqlite:///")).parent)
    return value


def _pem(*markers: bytes) -> Callable[[Path], Path]:
    """A check that a PEM file holds one of these blocks (its content is never quoted)."""

    def check(value: Path) -> Path:
        if not any(marker in value.read_bytes() for marker in markers):
            raise ValueError(f"not PEM with {' or '.join(m.decode() for m in markers)}")
        return value

    return check


def _public_key(value: Path) -> Path:
    try:
        keys_from_pem(value.read_bytes())
    except (ValueError, TypeError):
        raise ValueError("not an RSA or EC P-256 public key in PEM") from None
    return value


def _jwks(value: Path) -> Path:
    try:
        keys_from_jwks(value.read_bytes())
    except (ValueError, TypeError, AttributeError):
        raise ValueError("not a JWKS with an RS256 or ES256 signing key") from None
    return value


def _duration(value: object) -> object:
    if isinstance(value, str):
        match = DURATION_PATTERN.fullmatch(value.strip().lower())
        if not match:
            raise ValueError("not a duration")
        return float(match.group(1)) * DURATION_UNITS[match.group(2)]
    return value


def _named_values(value: object) -> object:
    return parse_named_values(value) if isinstance(value, str) else value


def _identities(value: object) -> object:
    """`name=identity,...` -> {identity: name}: looked up by the certificate's identity."""
    if isinstance(value, str):
        return {identity: name for name, identity in parse_named_values(value).items()}
    return value


def _tags(value: object) -> object:
    if isinstance(value, str):
        try:
            return vocabulary(value)
        except ValueError as exc:  # its message names FEEDBACK_TAGS itself
            raise ValueError(str(exc).removeprefix("FEEDBACK_TAGS").lstrip(": ")) from None
    return value


def _scope(value: str | None) -> str | None:
    unknown = [name for name in (value or "").split(" ") if name and name not in SCOPE_PERMISSIONS]
    if unknown:
        raise ValueError(f"unknown permission {unknown[0]!r}")
    return value


def _log_level(value: object) -> object:
    if isinstance(value, str):
        if value.strip().upper() not in LOG_LEVELS:
            raise ValueError("unknown level")
        return value.strip().upper()
    return value


def _log_format(value: object) -> object:
    if isinstance(value, str):
        if value.strip().lower() not in LOG_FORMATS:
            raise ValueError("unknown format")
        return value.strip().lower()
    return value


DURATION = Accepts("a duration: 7d, 12h, 1.5h, 30m, 45s or seconds")
Flag = Annotated[
    bool,
    BeforeValidator(_flag),
    Accepts(f"true or false (also {', '.join(TRUE_WORDS[1:] + FALSE_WORDS[1:])})"),
]
Address = Annotated[
    str, AfterValidator(address), Accepts("host:port with a port from 0 to 65535 (0: any free port)")
]
Directory = Annotated[
    Path, AfterValidator(_directory), Accepts("a directory, or a path where one can be made")
]
Certificates = Annotated[
    Path,
    AfterValidator(_existing_file),
    AfterValidator(_pem(b"-----BEGIN CERTIFICATE-----")),
    Accepts("the path of a PEM file of certificates"),
]
PrivateKey = Annotated[
    Path,
    AfterValidator(_existing_file),
    AfterValidator(_pem(b"PRIVATE KEY-----")),
    Accepts("the path of a PEM private key file"),
]
PublicKey = Annotated[
    Path,
    AfterValidator(_existing_file),
    AfterValidator(_public_key),
    Accepts("the path of a PEM public key file (RSA, or EC P-256)"),
]
Jwks = Annotated[
    Path,
    AfterValidator(_existing_file),
    AfterValidator(_jwks),
    Accepts("the path of a JWKS file (JSON) with RS256 or ES256 signing keys"),
]
ExistingFile = Annotated[Path, AfterValidator(_existing_file), Accepts("the path of an existing file")]
DatabaseUrl = Annotated[
    str, AfterValidator(_database_url), Accepts(f"a URL whose scheme is one of {', '.join(DATABASE_SCHEMES)}")
]
Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0), DURATION]
IDENTITIES = Accepts("service=identity pairs separated by commas")
# Held as {identity: service}; the variable says service=identity.
Identities = Annotated[dict[str, str], NoDecode, BeforeValidator(_identities), IDENTITIES]
NamedValues = Annotated[
    dict[str, str], NoDecode, BeforeValidator(_named_values), Accepts("name=value pairs separated by commas")
]
Tags = Annotated[
    tuple[str, ...],
    NoDecode,
    BeforeValidator(_tags),
    Accepts("tag names separated by commas: each 1 to 32 of a-z 0-9 _, none twice"),
]
Scope = Annotated[
    str,
    AfterValidator(_scope),
    EmptyIsAValue(),
    Accepts(f"permissions separated by spaces, of {', '.join(SCOPE_PERMISSIONS)}; empty: none"),
]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_log_level)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_log_format)]
Secret_ = Secret()
