"""Settings, read once from the environment (FEEDBACK_*)."""

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from feedback_service.auth.credentials import JwtKeys, parse_service_tokens
from feedback_service.store.database import sqlite_url

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50051"
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("data")
    # None: the embedded SQLite database in data_dir.
    database_url: str | None = None
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    service_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    db_workers: int = 8
    db_connect_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    workers: int = 1
    shutdown_grace_s: float = 10.0
    reflection: bool = True
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        def get(name: str) -> str | None:
            value = env.get(f"FEEDBACK_{name}", "").strip()
            return value or None

        key_file = get("JWT_PUBLIC_KEY_FILE")
        return cls(
            listen=get("LISTEN") or DEFAULT_LISTEN,
            data_dir=Path(get("DATA_DIR") or "data"),
            database_url=get("DATABASE_URL"),
            jwt_secret=get("JWT_SECRET"),
            jwt_public_key_file=Path(key_file) if key_file else None,
            jwt_issuer=get("JWT_ISSUER"),
            jwt_audience=get("JWT_AUDIENCE"),
            service_tokens=parse_service_tokens(get("SERVICE_TOKENS") or ""),
            db_workers=int(get("DB_WORKERS") or 8),
            db_connect_timeout_s=float(get("DB_CONNECT_TIMEOUT_S") or 5),
            health_interval_s=float(get("HEALTH_INTERVAL_S") or 1),
            workers=int(get("WORKERS") or 1),
            shutdown_grace_s=float(get("SHUTDOWN_GRACE_S") or 10),
            reflection=_flag(get("REFLECTION") or "true"),
            log_level=(get("LOG_LEVEL") or "INFO").upper(),
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def effective_database_url(self) -> str:
        return self.database_url or sqlite_url(self.data_dir / "feedback.db")

    def jwt_keys(self) -> JwtKeys:
        public_key = self.jwt_public_key_file.read_bytes() if self.jwt_public_key_file else None
        return JwtKeys(
            hs256_secret=self.resolved_jwt_secret(),
            public_key_pem=public_key,
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
        )

    def resolved_jwt_secret(self) -> str | None:
        """The HS256 secret. On the embedded default with no key configured, one
        is generated once into the data directory so a first run just works."""
        if self.jwt_secret or self.jwt_public_key_file or not self.embedded:
            return self.jwt_secret
        path = self.data_dir / JWT_SECRET_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            log.warning("no FEEDBACK_JWT_SECRET set: generated one into %s", path.resolve())
        return path.read_text().strip()
