"""feedback-service serve | migrate | token | config."""

import argparse
import asyncio
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jwt
from peewee import ImproperlyConfigured, InterfaceError, OperationalError

from feedback_service.config import SettingError, Settings, unknown_variables
from feedback_service.config import address as checked_address
from feedback_service.observability import configure_logging
from feedback_service.store.database import open_database
from feedback_service.store.dialects import describe_url
from feedback_service.store.migrations import migrate
from feedback_service.tracing import TracingConfigError, configure_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("feedback_service")


# What opening or migrating a database raises when it cannot be reached.
DATABASE_ERRORS = (OperationalError, InterfaceError, ImproperlyConfigured)
DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "mysql": 3306}


class CannotListen(Exception):
    """The server cannot listen on its address; the message says what to do."""

    def __init__(self, listen: str, reason: str) -> None:
        super().__init__(
            f"cannot listen on {listen}: {reason}; "
            "choose another address with --listen HOST:PORT or FEEDBACK_LISTEN"
        )


def check_listen(listen: str) -> None:
    """Raises CannotListen if nothing could listen on `listen` now, checked
    before gRPC tries: when gRPC's own bind fails, its core logs a line of
    its own first. Binds as gRPC does (SO_REUSEADDR, so a recent server's
    closing connections do not count) but without SO_REUSEPORT, even for
    --workers: its workers must be the only ones on the port, not join
    another server's. Only host:port addresses with a fixed port are
    checked; gRPC judges the rest."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0 or (":" in host and not host.startswith("[")):
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CannotListen(listen, f"the host does not resolve ({exc.strerror})") from None
    problems = []
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                problems.append(exc)
                continue
        return  # gRPC listens when it can bind any of the addresses
    if problems:
        first = problems[0]
        in_use = first.errno == errno.EADDRINUSE
        reason = "another process is already listening there" if in_use else first.strerror or str(first)
        raise CannotListen(listen, reason if in_use else reason.lower())


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serves until SIGTERM or SIGINT. Tracing is set up here, in the process
    that serves (each worker of --workers sets up its own)."""
    tracer_provider = configure_tracing()
    try:
        await _serve(settings, reuse_port, tracer_provider)
    finally:
        if tracer_provider:
            tracer_provider.shutdown()  # exports the spans still buffered


async def _serve(settings: Settings, reuse_port: bool, tracer_provider: "TracerProvider | None") -> None:
    from feedback_service.server import create_service  # grpc loads only when serving

    try:
        service = create_service(settings, reuse_port=reuse_port, tracer_provider=tracer_provider)
    except RuntimeError as exc:  # gRPC's bind failed after all (say, the port was taken meanwhile)
        if "Failed to bind" not in str(exc):
            raise
        raise CannotListen(settings.listen, "gRPC could not bind it") from None
    if not (settings.resolved_jwt_secret() or settings.jwt_public_key_file or settings.jwt_jwks_file):
        log.warning("no JWT key is configured: every bearer token will be refused (UNAUTHENTICATED)")
    await service.start()
    url = describe_url(settings.effective_database_url())
    transport = "mutual TLS" if settings.tls_client_ca_file else "TLS" if settings.tls else "plaintext"
    log.info("serving on %s (port %d, %s), database %s", settings.listen, service.port, transport, url)
    if tracer_provider:
        log.info("tracing on: exporting to %s", os.environ.get("OTEL_TRACES_EXPORTER"))
    if settings.metrics_listen:
        log.info("metrics on http://%s/metrics (port %d)", settings.metrics_listen, metrics_port(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls (up to %.0fs)", settings.shutdown_grace_s)
    await service.stop(settings.shutdown_grace_s)
    log.info("stopped")


def database_problem(settings: Settings, error: Exception) -> str:
    """One line for a database that cannot be opened at start: where it is
    (host and port, or the SQLite file) and the driver's first line, never
    the URL's password."""
    url = settings.effective_database_url()
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        where = f"the SQLite database {url.removeprefix('sqlite:///')}"
    else:
        port = parts.port or DEFAULT_PORTS.get(scheme)
        where = f"the database at {parts.hostname or 'localhost'}:{port}"
    reason = (str(error).strip().splitlines() or [error.__class__.__name__])[0]
    if parts.password:
        reason = reason.replace(parts.password, "****")
    return f"cannot open {where}: {reason[:200]}"


def metrics_port(settings: Settings) -> int:
    from feedback_service.observability import start_metrics_server

    assert settings.metrics_listen is not None, "only called with metrics configured"
    return start_metrics_server(settings.metrics_listen)


def _worker(settings: Settings, index: int) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_listen:  # each worker has its own registry: port + index
        host, _, port = settings.metrics_listen.rpartition(":")
        settings = settings.replaced(metrics_listen=f"{host}:{int(port) + index}")
    try:
        asyncio.run(serve(settings, reuse_port=True))
    except CannotListen as exc:
        log.error("%s", exc)
        sys.exit(1)
    except TracingConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except DATABASE_ERRORS as exc:
        log.error("%s", database_problem(settings, exc))
        sys.exit(1)


def serve_workers(settings: Settings) -> int:
    """N server processes on one port (SO_REUSEPORT): the kernel spreads
    connections across them. Each has its own database pool; they share
    nothing but the database. SIGTERM/SIGINT is passed on to every worker."""
    if settings.listen.rsplit(":", 1)[-1] == "0":
        log.error("--workers needs a fixed port: the workers must share it")
        return 2
    migrate(open_database(settings.effective_database_url(), settings.db_connect_timeout_s))
    settings.resolved_jwt_secret()  # generate it once, before the workers read it
    context = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
    workers = [
        context.Process(target=_worker, args=(settings, i), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: drains like a single server

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        if not stopping and any(w.exitcode not in (None, 0) for w in workers):
            log.error("a worker failed; stopping the others")
            stop(signal.SIGTERM, None)
        time.sleep(0.2)
    return 0 if all(worker.exitcode == 0 for worker in workers) else 1


def run_migrate(settings: Settings) -> None:
    url = settings.effective_database_url()
    version = migrate(open_database(url, settings.db_connect_timeout_s))
    print(f"{describe_url(url)}: schema at version {version}")


def run_token(settings: Settings, args: argparse.Namespace) -> int:
    secret = settings.resolved_jwt_secret()
    if not secret:
        print("no JWT secret: set FEEDBACK_JWT_SECRET", file=sys.stderr)
        return 2
    print(
        mint_token(
            secret,
            args.user_id,
            ttl_s=args.ttl,
            scope=args.scope,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


def mint_token(
    secret: str,
    user_id: str,
    *,
    ttl_s: int = 3600,
    scope: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token for a user, for trying the service by hand."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    for name, value in (("scope", scope), ("iss", issuer), ("aud", audience)):
        if value is not None:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")


def run_config(settings: Settings) -> int:
    """Prints the effective settings (secrets masked), as they would be set."""
    try:
        for name, value in settings.shown():
            print(f"{name}={value}", flush=True)
    except BrokenPipeError:  # `config | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def listen_option(value: str) -> str:
    try:
        return checked_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value[:64]!a} is not accepted ({exc}): expected host:port"
        ) from None


def workers_option(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(
            f"{value[:64]!a} is not accepted: expected a whole number from 1 to 256"
        )
    return int(value)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="feedback-service", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gRPC server")
    serve_cmd.add_argument(
        "--listen", type=listen_option, help="host:port (default: FEEDBACK_LISTEN or 127.0.0.1:50051)"
    )
    serve_cmd.add_argument(
        "--workers",
        type=workers_option,
        help="server processes sharing the port (default: FEEDBACK_WORKERS or 1)",
    )
    commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    token = commands.add_parser("token", help="print an HS256 JWT for a user, for trying the service")
    token.add_argument("user_id")
    token.add_argument("--scope", help="space-separated permissions (default: no scope claim)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    commands.add_parser(
        "config", help="check the FEEDBACK_* settings and print them (secrets masked), without serving"
    )
    return root


def load_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the command line's overrides."""
    settings = Settings.from_env()
    if args.command == "serve" and (args.listen or args.workers is not None):
        overrides = {
            "listen": args.listen or settings.listen,
            "workers": settings.workers if args.workers is None else args.workers,
        }
        settings = settings.replaced(**overrides)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except SettingError as exc:  # a bad FEEDBACK_* value: one line, no traceback, no secret
        print(f"feedback-service: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    for name in unknown_variables():
        log.warning("unknown setting %s is ignored", name)
    try:
        return run(settings, args)
    except DATABASE_ERRORS as exc:
        log.error("%s", database_problem(settings, exc))
        return 1


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "serve":
        try:
            check_listen(settings.listen)
            if settings.workers > 1:
                return serve_workers(settings)
            asyncio.run(serve(settings))
        except CannotListen as exc:
            log.error("%s", exc)
            return 1
        except TracingConfigError as exc:
            log.error("%s", exc)
            return 2
    elif args.command == "migrate":
        run_migrate(settings)
    elif args.command == "token":
        return run_token(settings, args)
    elif args.command == "config":
        return run_config(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
