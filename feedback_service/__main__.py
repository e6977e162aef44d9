"""The `feedback-service` command (also `python -m feedback_service`).

`pip install feedback-service` installs the Python client only; the server's
dependencies are the extra `server`. Without them, the command says so in one
line instead of failing with a traceback on the first missing import.
"""

import sys
from importlib.util import find_spec

# A module of each distribution of the `server` extra that the command imports.
SERVER_MODULES = (
    "peewee",
    "jwt",
    "prometheus_client",
    "grpc_health",
    "grpc_reflection",
    "opentelemetry.sdk",
    "pydantic_settings",
)


def missing_server_modules() -> list[str]:
    missing = []
    for name in SERVER_MODULES:
        try:
            found = find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def main() -> int:
    missing = missing_server_modules()
    if missing:
        print(
            f"feedback-service: the server's dependencies are not installed (no {', '.join(missing)}); "
            "install feedback-service[server]",
            file=sys.stderr,
        )
        return 2
    from feedback_service.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
