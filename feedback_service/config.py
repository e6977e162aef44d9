"""Settings, read once from the environment (FEEDBACK_*). The README's
configuration table lists each one."""

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from feedback_service.domain.validation import DEFAULT_TAGS, vocabulary

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50051"
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name


def parse_named_values(spec: str, setting: str = "the setting") -> dict[str, str]:
    """`name=value,name2=value2` -> {name: value} (values may contain '=')."""
    pairs: dict[str, str] = {}
    for position, entry in enumerate(filter(None, (part.strip() for part in spec.split(","))), 1):
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or not value.strip():
            # Never quote the entry: in FEEDBACK_SERVICE_TOKENS it may be a token.
            raise ValueError(
                f"{setting}: entry {position} is not name=value (entries are separated by commas)"
            )
        pairs[name.strip()] = value.strip()
    return pairs


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_duration(name: str, value: str) -> float:
    """Seconds from `7d`, `12h`, `30m`, `45s` or a plain number of seconds."""
    match = DURATION_PATTERN.fullmatch(value.strip().lower())
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ValueError(
            f"{name} must be a positive duration such as 7d, 12h, 30m, 45s or 3600, got {value!r}"
        )
    return seconds


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("data")
    # None: the embedded SQLite database in data_dir.
    database_url: str | None = None
    db_workers: int = 8
    db_connect_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    workers: int = 1
    # Authentication
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 0.0
    service_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Transport security: client certificate identity (SAN or CN) -> service name
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_client_services: Mapping[str, str] = field(default_factory=dict)
    # Limits
    max_message_bytes: int = 256 * 1024
    max_metadata_bytes: int = 16 * 1024
    # Calls of ours being served at once (authenticated, request received).
    max_concurrent_rpcs: int = 1000
    # A call whose request message has not arrived this long after it began is dropped.
    request_timeout_s: float = 5.0
    # Open health Watch and reflection streams, per client connection and in all.
    max_public_streams_per_connection: int = 10
    max_public_streams: int = 100
    # Open StreamFeedbackChanges streams (they do not count as calls in progress).
    max_change_streams: int = 64
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    keepalive_min_client_interval_s: float = 10.0
    # The change feed: how long changes are kept, how often old ones (and old
    # request ids) are pruned, how often a following stream looks for new ones.
    changes_retention_s: float = 7 * 86400.0
    changes_prune_interval_s: float = 60.0
    changes_poll_interval_s: float = 0.5
    # Operations
    shutdown_grace_s: float = 10.0
    reflection: bool = True
    metrics_listen: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    # Feedback: the tags a feedback may carry.
    tags: tuple[str, ...] = DEFAULT_TAGS

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        @overload
        def get(name: str, default: str) -> str: ...
        @overload
        def get(name: str, default: None = None) -> str | None: ...
        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(f"FEEDBACK_{name}", "").strip()
            return value or default

        defaults = cls()
        return cls(
            listen=get("LISTEN", DEFAULT_LISTEN),
            data_dir=Path(get("DATA_DIR", "data")),
            database_url=get("DATABASE_URL"),
            db_workers=int(get("DB_WORKERS", str(defaults.db_workers))),
            db_connect_timeout_s=float(get("DB_CONNECT_TIMEOUT_S", str(defaults.db_connect_timeout_s))),
            health_interval_s=float(get("HEALTH_INTERVAL_S", str(defaults.health_interval_s))),
            workers=int(get("WORKERS", "1")),
            jwt_secret=get("JWT_SECRET"),
            jwt_public_key_file=_path(get("JWT_PUBLIC_KEY_FILE")),
            jwt_jwks_file=_path(get("JWT_JWKS_FILE")),
            jwt_issuer=get("JWT_ISSUER"),
            jwt_audience=get("JWT_AUDIENCE"),
            jwt_leeway_s=float(get("JWT_LEEWAY_S", "0")),
            service_tokens=parse_named_values(get("SERVICE_TOKENS", ""), "FEEDBACK_SERVICE_TOKENS"),
            tls_cert_file=_path(get("TLS_CERT_FILE")),
            tls_key_file=_path(get("TLS_KEY_FILE")),
            tls_client_ca_file=_path(get("TLS_CLIENT_CA_FILE")),
            tls_client_services={
                identity: name
                for name, identity in parse_named_values(
                    get("TLS_CLIENT_SERVICES", ""), "FEEDBACK_TLS_CLIENT_SERVICES"
                ).items()
            },
            max_message_bytes=int(get("MAX_MESSAGE_BYTES", str(defaults.max_message_bytes))),
            max_metadata_bytes=int(get("MAX_METADATA_BYTES", str(defaults.max_metadata_bytes))),
            max_concurrent_rpcs=int(get("MAX_CONCURRENT_RPCS", str(defaults.max_concurrent_rpcs))),
            request_timeout_s=float(get("REQUEST_TIMEOUT_S", str(defaults.request_timeout_s))),
            max_public_streams_per_connection=int(
                get("MAX_PUBLIC_STREAMS_PER_CONNECTION", str(defaults.max_public_streams_per_connection))
            ),
            max_public_streams=int(get("MAX_PUBLIC_STREAMS", str(defaults.max_public_streams))),
            max_change_streams=int(get("MAX_CHANGE_STREAMS", str(defaults.max_change_streams))),
            changes_retention_s=parse_duration(
                "FEEDBACK_CHANGES_RETENTION", get("CHANGES_RETENTION", str(defaults.changes_retention_s))
            ),
            changes_prune_interval_s=float(
                get("CHANGES_PRUNE_INTERVAL_S", str(defaults.changes_prune_interval_s))
            ),
            changes_poll_interval_s=float(
                get("CHANGES_POLL_INTERVAL_S", str(defaults.changes_poll_interval_s))
            ),
            keepalive_time_s=float(get("KEEPALIVE_TIME_S", str(defaults.keepalive_time_s))),
            keepalive_timeout_s=float(get("KEEPALIVE_TIMEOUT_S", str(defaults.keepalive_timeout_s))),
            keepalive_min_client_interval_s=float(
                get("KEEPALIVE_MIN_CLIENT_INTERVAL_S", str(defaults.keepalive_min_client_interval_s))
            ),
            shutdown_grace_s=float(get("SHUTDOWN_GRACE_S", str(defaults.shutdown_grace_s))),
            reflection=_flag(get("REFLECTION", "true")),
            metrics_listen=get("METRICS_LISTEN"),
            log_level=get("LOG_LEVEL", "INFO").upper(),
            log_format=get("LOG_FORMAT", "text").lower(),
            tags=vocabulary(get("TAGS", ",".join(DEFAULT_TAGS))),
        )

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
