"""feedback-service serve | migrate | token."""

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace

from feedback_service.auth.credentials import mint_token
from feedback_service.config import Settings
from feedback_service.store.database import Store, describe_url, open_database
from feedback_service.store.migrations import migrate

log = logging.getLogger("feedback_service")


async def serve(settings: Settings) -> None:
    from feedback_service.server import build_server  # grpc imports only when serving

    url = settings.effective_database_url()
    db = open_database(url)
    migrate(db)
    service = build_server(settings, Store(db, settings.db_workers))
    await service.start()
    log.info("serving on %s (port %d), database %s", settings.listen, service.port, describe_url(url))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls (up to %.0fs)", settings.shutdown_grace_s)
    await service.stop(settings.shutdown_grace_s)
    log.info("stopped")


def run_migrate(settings: Settings) -> None:
    url = settings.effective_database_url()
    version = migrate(open_database(url))
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="feedback-service", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the gRPC server")
    serve_cmd.add_argument("--listen", help="host:port (default: FEEDBACK_LISTEN or 127.0.0.1:50051)")
    commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    token = commands.add_parser("token", help="print an HS256 JWT for a user, for trying the service")
    token.add_argument("user_id")
    token.add_argument("--scope", help="space-separated permissions (default: no scope claim = all)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        if args.listen:
            settings = replace(settings, listen=args.listen)
        asyncio.run(serve(settings))
    elif args.command == "migrate":
        run_migrate(settings)
    elif args.command == "token":
        return run_token(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
