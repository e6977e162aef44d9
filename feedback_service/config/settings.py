"""The settings model: every FEEDBACK_* variable the service reads.

Each setting is one declaration in `Settings` below: its type (config/types.py
says what each accepts), its range or allowed values, its default and its
meaning. A value outside them is refused with one line (`SettingError`) that
names the variable, quotes the value (cut, escaped, never a secret) and says
what is accepted."""

import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.sources import PydanticBaseSettingsSource

from feedback_service.config.environment import EnvironmentSource, unknown_variables_of, variables_of
from feedback_service.config.fields import PREFIX, variable
from feedback_service.config.shown import SettingError, describe_errors, shown_value
from feedback_service.config.types import (
    Address,
    Certificates,
    DatabaseUrl,
    Directory,
    Duration,
    Flag,
    Identities,
    Jwks,
    LogFormat,
    LogLevel,
    NamedValues,
    PrivateKey,
    PublicKey,
    Scope,
    Secret_,
    Tags,
    sqlite_url,
)
from feedback_service.domain.validation import DEFAULT_TAGS

# The package's name, as before it was split: log configuration may name it.
log = logging.getLogger("feedback_service.config")

DEFAULT_LISTEN = "127.0.0.1:50051"
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name


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
        description="Database threads, one connection each, on PostgreSQL and MySQL. (SQLite runs "
        "reads on the event loop within a step budget, and the rest on one reader thread and up to "
        "two scan threads; writes go through one writer thread: see the SQLite scheduling page.)",
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
        "with `DEADLINE_EXCEEDED` (checked every quarter of it, at most every second, so up to a "
        "quarter later).",
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
        return cls.checked(EnvironmentSource(cls, env)())

    @classmethod
    def checked(cls, values: Mapping[str, Any]) -> "Settings":
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingError(describe_errors(exc, cls.model_fields)) from None

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


def variables() -> dict[str, str]:
    """Each setting's variable -> its field name."""
    return variables_of(Settings)


def unknown_variables(env: Mapping[str, str] = os.environ) -> list[str]:
    """`FEEDBACK_X (did you mean FEEDBACK_Y?)` for each FEEDBACK_* variable no
    setting reads: most likely a typo, which would otherwise go unnoticed."""
    return unknown_variables_of(Settings, env)
