"""Settings: the one place a FEEDBACK_* variable is read.

Each setting is one declaration in `Settings` below: its type, its range or
allowed values, its default and its meaning. A value outside them is refused
with one line (`SettingError`) that names the variable, quotes the value
(cut, escaped, never a secret) and says what is accepted. The handbook's
configuration page is generated from these declarations
(scripts/docs-reference), so a new setting documents itself."""

import difflib
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import annotated_types
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource

from feedback_service.auth.credentials import SCOPE_PERMISSIONS
from feedback_service.auth.keys import keys_from_jwks, keys_from_pem
from feedback_service.domain.validation import DEFAULT_TAGS, vocabulary

log = logging.getLogger(__name__)

PREFIX = "FEEDBACK_"
DEFAULT_LISTEN = "127.0.0.1:50051"
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name
# Read by the test suite (tests/), never by the service: not unknown settings.
TEST_VARIABLES = frozenset(
    {"FEEDBACK_TEST_POSTGRES_URL", "FEEDBACK_TEST_MYSQL_URL", "FEEDBACK_REQUIRE_BACKENDS"}
)
# The database URL schemes the store has a dialect for (store/dialects.py).
DATABASE_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "postgresql+pool",
    "postgres+pool",
    "mysql",
    "mysql+pool",
)
QUOTE_LIMIT = 64
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


class SettingError(ValueError):
    """A setting the service cannot run with; the message is one line, safe to print."""


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


class Settings(BaseSettings):
    """Every setting of the service. The environment variable of a setting is
    FEEDBACK_ and its name in capitals, unless its validation_alias names one."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
    )

    listen: Address = Field(
        DEFAULT_LISTEN,
        description="`host:port` to serve on; `serve --listen` overrides it. Port 0 picks a free one "
        "(logged). If another process already listens there, `serve` exits 1 with one line saying so.",
    )
    data_dir: Directory = Field(
        Path("data"),
        description="Holds the default SQLite database `feedback.db` and the generated `jwt_secret` "
        "(relative to the current directory; `scripts/dev` sets the checkout's `data/`).",
    )
    database_url: Annotated[DatabaseUrl | None, Secret_] = Field(
        None,
        description="The database (unset: SQLite at `$FEEDBACK_DATA_DIR/feedback.db`); the forms are "
        "listed below. Its password is never shown.",
    )
    db_workers: int = Field(
        8,
        ge=1,
        le=1024,
        description="Database threads, one connection each, on PostgreSQL and MySQL. (SQLite reads run "
        "on the event loop and writes go through one writer thread.)",
    )
    db_connect_timeout_s: float = Field(
        5.0, ge=1, le=3600, description="Connect timeout for PostgreSQL and MySQL, in seconds."
    )
    health_interval_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="How often health probes the database (`SELECT 1`): two failed probes in a row "
        "turn every health status `NOT_SERVING`, one good probe turns them back.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Server processes sharing the port (SO_REUSEPORT); `serve --workers N` overrides "
        "it. Needs a fixed port that no other server holds.",
    )
    # Authentication
    jwt_secret: Annotated[str | None, Secret_] = Field(
        None,
        repr=False,
        description="HS256 secret for user JWTs. If unset, no key file is set and "
        "`FEEDBACK_DATABASE_URL` is unset, one is generated into `$FEEDBACK_DATA_DIR/jwt_secret` "
        "(mode 0600) on first use. With a database URL set and no key, no JWT is accepted.",
    )
    jwt_public_key_file: PublicKey | None = Field(
        None,
        description="PEM public key: RSA (verifies RS256) or EC P-256 (ES256). Re-read when it changes.",
    )
    jwt_jwks_file: Jwks | None = Field(
        None,
        description="JWKS file of RSA / EC P-256 signing keys, matched by `kid`; re-read when it "
        "changes, so keys rotate without a restart.",
    )
    jwt_issuer: str | None = Field(None, description="When set, tokens must carry this `iss`.")
    jwt_audience: str | None = Field(
        None,
        description="When set, tokens must carry this `aud`. When unset, a token that names an "
        "audience is refused.",
    )
    jwt_leeway_s: float = Field(
        0.0, ge=0, le=3600, description="Clock skew allowed on `exp`, `nbf` and `iat`, in seconds."
    )
    jwt_default_scope: Scope | None = Field(
        None,
        description="The permissions of a user token without a `scope` claim. Unset: every "
        "permission (such a token may read, write and delete its user's feedback). Empty: none.",
    )
    service_tokens: Annotated[NamedValues, Secret_] = Field(
        default_factory=dict,
        repr=False,
        description="Internal services' tokens: `name=token,name2=token2` (unset: no service can "
        "call). The name appears in logs.",
    )
    # Transport security
    tls_cert_file: Certificates | None = Field(
        None, description="PEM certificate chain: with the key, the port serves TLS only."
    )
    tls_key_file: PrivateKey | None = Field(None, description="PEM private key of the certificate.")
    tls_client_ca_file: Certificates | None = Field(
        None,
        description="With TLS: clients must present a certificate signed by this CA (mutual TLS).",
    )
    # Client certificate identity (SAN or CN) -> service name; the variable is name=identity.
    tls_client_services: Identities = Field(
        default_factory=dict,
        description="`name=identity,...`: a verified client certificate whose SAN or CN equals "
        "`identity` acts as service `name` without a token.",
    )
    # Limits
    max_message_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request message; larger is `RESOURCE_EXHAUSTED`.",
    )
    max_metadata_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="Largest request metadata (headers)."
    )
    max_concurrent_rpcs: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Calls of ours served at once, counted once a call has shown valid credentials and "
        "delivered its request; calls beyond are `RESOURCE_EXHAUSTED`. Health checks, calls still "
        "waiting for their request and open `StreamFeedbackChanges` streams never count.",
    )
    request_timeout_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="A call whose request message has not arrived this long after it began is ended "
        "with `DEADLINE_EXCEEDED`.",
    )
    max_public_streams_per_connection: int = Field(
        10,
        ge=1,
        le=100_000,
        description="Open health `Watch` and reflection streams per client connection; one more is "
        "`RESOURCE_EXHAUSTED`.",
    )
    max_public_streams: int = Field(100, ge=1, le=1_000_000, description="The same, over all connections.")
    max_change_streams: int = Field(
        64,
        ge=1,
        le=100_000,
        description="`StreamFeedbackChanges` and `ExportFeedback` streams open at once per server "
        "process; one more is `RESOURCE_EXHAUSTED`.",
    )
    keepalive_time_s: float = Field(60.0, gt=0, le=86400, description="Server keepalive ping interval.")
    keepalive_timeout_s: float = Field(
        20.0, gt=0, le=3600, description="How long a keepalive ping may go unanswered."
    )
    keepalive_min_client_interval_s: float = Field(
        10.0, gt=0, le=86400, description="Clients pinging more often than this (twice) are sent GOAWAY."
    )
    # The change feed
    changes_retention_s: Duration = Field(
        7 * 86400.0,
        validation_alias="FEEDBACK_CHANGES_RETENTION",
        description="How long changes are kept for `StreamFeedbackChanges`. A cursor older than that "
        "is `FAILED_PRECONDITION`.",
    )
    changes_prune_interval_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="How often each server process prunes changes past the retention and request ids "
        "past their 24 hours.",
    )
    changes_poll_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often a following `StreamFeedbackChanges` stream looks for new changes.",
    )
    # Operations
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="On SIGTERM/SIGINT, how long calls in flight may run before they are cancelled.",
    )
    reflection: Flag = Field(True, description="Server reflection (what grpcurl lists and describes).")
    metrics_listen: Address | None = Field(
        None,
        description="`host:port` of the Prometheus `/metrics` HTTP endpoint (unset: off; port 0 picks "
        "one, logged).",
    )
    log_level: LogLevel = Field("INFO", description="Log level (`WARNING` also silences the access log).")
    log_format: LogFormat = Field("text", description="`text`, or `json` for one JSON object per line.")
    # Feedback
    tags: Tags = Field(
        DEFAULT_TAGS,
        description="The tags a feedback may carry. Feedback keeps the tags it was given when one is "
        "later removed from the list; filtering on a removed tag is `INVALID_ARGUMENT`.",
    )

    @model_validator(mode="after")
    def _tls_whole(self) -> "Settings":
        """Refuses half a TLS configuration rather than silently serving plaintext."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both FEEDBACK_TLS_CERT_FILE and FEEDBACK_TLS_KEY_FILE")
        if not self.tls and (self.tls_client_ca_file or self.tls_client_services):
            raise ValueError(
                "FEEDBACK_TLS_CLIENT_CA_FILE and FEEDBACK_TLS_CLIENT_SERVICES need TLS: "
                "set FEEDBACK_TLS_CERT_FILE and FEEDBACK_TLS_KEY_FILE"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) takes its arguments only: the environment is read by
        # from_env alone, so building settings in code never picks it up.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        """The settings of an environment; SettingError (one line) for a bad value."""
        return cls.checked(_EnvironmentSource(cls, env)())

    @classmethod
    def checked(cls, values: Mapping[str, Any]) -> "Settings":
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingError(_describe_errors(exc)) from None

    def replaced(self, **changes: Any) -> "Settings":
        """These settings with some changed (command-line options), checked again."""
        return self.checked({name: getattr(self, name) for name in type(self).model_fields} | changes)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir / "feedback.db")

    def resolved_jwt_secret(self) -> str | None:
        """The HS256 secret. On the embedded default with no key configured, one
        is generated once into the data directory so a first run just works."""
        if self.jwt_secret or self.jwt_public_key_file or self.jwt_jwks_file or not self.embedded:
            return self.jwt_secret
        path = self.data_dir / JWT_SECRET_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            log.warning("no FEEDBACK_JWT_SECRET set: generated one into %s", path.resolve())
        return path.read_text().strip()

    def shown(self) -> Iterator[tuple[str, str]]:
        """(variable, value as it would be set) for every setting, secrets masked."""
        for name, field in type(self).model_fields.items():
            yield variable(name, field), shown_value(field, getattr(self, name))


class _EnvironmentSource(EnvSettingsSource):
    """The FEEDBACK_* variables of a mapping (os.environ by default). A blank
    value counts as unset, except where the setting gives it a meaning."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        keep_empty = {
            variable(name, field)
            for name, field in Settings.model_fields.items()
            if any(isinstance(m, EmptyIsAValue) for m in markers(field))
        }
        return {
            key.lower(): value.strip()
            for key, value in self._env.items()
            if key.startswith(PREFIX) and (value.strip() or key in keep_empty)
        }


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable of a setting."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def variables() -> dict[str, str]:
    """Each setting's variable -> its field name."""
    return {variable(name, field): name for name, field in Settings.model_fields.items()}


def unknown_variables(env: Mapping[str, str] = os.environ) -> list[str]:
    """`FEEDBACK_X (did you mean FEEDBACK_Y?)` for each FEEDBACK_* variable no
    setting reads: most likely a typo, which would otherwise go unnoticed."""
    known = variables()
    unknown = []
    for key in sorted(env):
        if key.startswith(PREFIX) and key not in known and key not in TEST_VARIABLES:
            names = {name.removeprefix(PREFIX): name for name in known}
            close = difflib.get_close_matches(key.removeprefix(PREFIX), names, n=1)
            unknown.append(f"{key} (did you mean {names[close[0]]}?)" if close else key)
    return unknown


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
    low = f"{_number(bounds['ge'])}" if "ge" in bounds else None
    high = f"{_number(bounds['le'])}" if "le" in bounds else None
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if "gt" in bounds:
        return f" above {_number(bounds['gt'])}" + (f", at most {high}" if high is not None else "")
    return f" from {low}" if low is not None else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def shown_value(field: FieldInfo, value: object) -> str:
    """A setting's value as its variable would be set, secrets masked."""
    if value is None or value == {}:
        return ""
    if is_secret(field):
        return _masked_url(str(value)) if isinstance(value, str) and "://" in str(value) else "********"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _duration_text(value) if DURATION in markers(field) else _number(value)
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
    return _number(seconds)


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


def _describe_errors(exc: ValidationError) -> str:
    """One line for the first bad setting, naming the others if there are more."""
    by_key = {}
    for name, field in Settings.model_fields.items():
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
