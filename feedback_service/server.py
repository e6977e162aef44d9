"""Builds the gRPC server: interceptors, servicers, health and reflection."""

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from opentelemetry import trace

from feedback.v1 import feedback_pb2, feedback_pb2_grpc, thread_registry_pb2, thread_registry_pb2_grpc
from feedback_service.auth.access import declared_rules
from feedback_service.auth.credentials import (
    Authenticator,
    JwtPolicy,
    JwtVerifier,
    ServiceTokens,
    scope_permissions,
)
from feedback_service.auth.keys import KeySet
from feedback_service.auth.principal import ALL_PERMISSIONS
from feedback_service.config import Settings
from feedback_service.domain import housekeeping
from feedback_service.domain.changes import ChangeFeed
from feedback_service.domain.feedback import FeedbackRules
from feedback_service.domain.threads import ThreadRules
from feedback_service.health import DatabaseHealth
from feedback_service.interceptors.authentication import AuthenticationInterceptor
from feedback_service.interceptors.authorization import AuthorizationInterceptor
from feedback_service.interceptors.base import HandlerCache
from feedback_service.interceptors.draining import CallerWaits
from feedback_service.interceptors.errors import ErrorStatusInterceptor
from feedback_service.interceptors.limits import (
    ChangeStreamLimitInterceptor,
    ConcurrencyLimitInterceptor,
    PublicStreamLimitInterceptor,
)
from feedback_service.interceptors.observability import ObservabilityInterceptor
from feedback_service.interceptors.request import RequestInterceptor
from feedback_service.interceptors.tracing import TracingInterceptor
from feedback_service.observability import access_log
from feedback_service.reflection import enable_reflection
from feedback_service.servicers.feedback import FeedbackServicer
from feedback_service.servicers.health import HealthServicer
from feedback_service.servicers.thread_registry import ThreadRegistryServicer
from feedback_service.store.database import Store, open_database
from feedback_service.store.migrations import migrate
from feedback_service.tracing import TRACER_NAME

log = logging.getLogger(__name__)

SERVICES = (
    feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"],
    thread_registry_pb2.DESCRIPTOR.services_by_name["ThreadRegistry"],
)
SERVICE_NAMES = [service.full_name for service in SERVICES]
# How long a stopped server waits for its calls' tasks to run their last steps.
CALL_TAIL_S = 2.0


@dataclass
class Service:
    """A built, not yet started, server and what it holds."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    store: Store
    database_health: DatabaseHealth
    caller_waits: CallerWaits
    changes: ChangeFeed
    prune_interval_s: float
    _watcher: asyncio.Task[None] | None = None
    _pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self._watcher = asyncio.create_task(self.database_health.watch())
        self._pruner = asyncio.create_task(
            housekeeping.prune_every(self.store, self.changes, self.prune_interval_s)
        )

    async def stop(self, grace_s: float) -> None:
        """Reports NOT_SERVING (ending open health Watch streams), ends open
        change streams, refuses new calls, and lets every other accepted call
        finish for up to grace_s before cancelling it."""
        for task in (self._watcher, self._pruner):
            if task:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await self.health.shut_down()
        self.caller_waits.end_all()
        await self.server.stop(grace_s)
        await _calls_settled(CALL_TAIL_S)
        self.store.close()
        access_log.flush()


async def _calls_settled(timeout_s: float) -> None:
    """The server stops once every call has sent its status, but a call's
    task still has steps to run (its access line, grpc's own bookkeeping):
    closing the loop now would cancel it there, with a traceback."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout_s)


def build_authenticator(settings: Settings) -> Authenticator:
    keys = KeySet(settings.resolved_jwt_secret(), settings.jwt_public_key_file, settings.jwt_jwks_file)
    default_scope = settings.jwt_default_scope
    policy = JwtPolicy(
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_leeway_s,
        ALL_PERMISSIONS if default_scope is None else scope_permissions(default_scope),
    )
    return Authenticator(
        JwtVerifier(keys, policy), ServiceTokens(settings.service_tokens), settings.tls_client_services
    )


def server_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    """Limits a hostile or buggy client cannot get past, and keepalive rules."""
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        # Clients pinging more often than this (twice) get GOAWAY.
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.keepalive_min_client_interval_s * 1000),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """TLS with the configured certificate; with a client CA, clients must
    present a certificate it signed (mutual TLS)."""
    key, certificate = settings.tls_key_file, settings.tls_cert_file
    assert key is not None and certificate is not None, "only called with TLS configured"
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), certificate.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def interceptors(
    settings: Settings, waits: CallerWaits, tracer: trace.Tracer | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first. Credentials are checked before the request message is
    read, so a caller without them is turned away before it can stall. With
    tracing off there is no tracing interceptor at all."""
    tracing: list[grpc.aio.ServerInterceptor] = [TracingInterceptor(tracer)] if tracer else []
    return [
        *tracing,
        ObservabilityInterceptor(traced=tracer is not None),
        ErrorStatusInterceptor(),
        AuthenticationInterceptor(
            build_authenticator(settings), client_certificates=settings.tls_client_ca_file is not None
        ),
        RequestInterceptor(waits),
        ConcurrencyLimitInterceptor(settings.max_concurrent_rpcs),
        AuthorizationInterceptor(declared_rules(SERVICES)),
        ChangeStreamLimitInterceptor(settings.max_change_streams, waits),
        PublicStreamLimitInterceptor(
            settings.max_public_streams, settings.max_public_streams_per_connection, waits
        ),
    ]


def build_server(
    settings: Settings, store: Store, *, reuse_port: bool = False, tracer: trace.Tracer | None = None
) -> Service:
    # No maximum_concurrent_rpcs: gRPC's own limit counts every call, health
    # checks and stalled callers included (see interceptors/limits.py).
    waits = CallerWaits(settings.request_timeout_s)
    server = grpc.aio.server(
        interceptors=[HandlerCache(interceptors(settings, waits, tracer))],
        options=server_options(settings, reuse_port),
    )
    changes = ChangeFeed(
        store, poll_interval_s=settings.changes_poll_interval_s, retention_s=settings.changes_retention_s
    )
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(
        FeedbackServicer(FeedbackRules(store, settings.tags), changes), server
    )
    thread_registry_pb2_grpc.add_ThreadRegistryServicer_to_server(
        ThreadRegistryServicer(ThreadRules(store)), server
    )
    health_servicer = HealthServicer(SERVICE_NAMES)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        enable_reflection(server, [*SERVICE_NAMES, health.SERVICE_NAME])
    if settings.tls:
        port = server.add_secure_port(settings.listen, server_credentials(settings))
    else:
        port = server.add_insecure_port(settings.listen)
    database_health = DatabaseHealth(store, health_servicer, settings.health_interval_s)
    return Service(
        server,
        port,
        health_servicer,
        store,
        database_health,
        waits,
        changes,
        settings.changes_prune_interval_s,
    )


def create_service(
    settings: Settings, *, reuse_port: bool = False, tracer_provider: trace.TracerProvider | None = None
) -> Service:
    """Opens and migrates the database, then builds the server over it. With
    a tracer provider, RPCs and their database work are traced to it."""
    db = open_database(settings.effective_database_url(), settings.db_connect_timeout_s)
    migrate(db)
    tracer = tracer_provider.get_tracer(TRACER_NAME) if tracer_provider else None
    return build_server(
        settings, Store(db, settings.db_workers, tracer), reuse_port=reuse_port, tracer=tracer
    )
