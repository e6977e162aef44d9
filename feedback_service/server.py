"""Builds the gRPC server: interceptors, servicers, health and reflection."""

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from feedback.v1 import feedback_pb2, feedback_pb2_grpc, thread_registry_pb2, thread_registry_pb2_grpc
from feedback_service.auth.access import declared_rules
from feedback_service.auth.credentials import Authenticator, JwtVerifier, ServiceTokens
from feedback_service.config import Settings
from feedback_service.domain.feedback import FeedbackRules
from feedback_service.domain.threads import ThreadRules
from feedback_service.health import DatabaseHealth
from feedback_service.interceptors.authentication import AuthenticationInterceptor
from feedback_service.interceptors.authorization import AuthorizationInterceptor
from feedback_service.interceptors.errors import ErrorStatusInterceptor
from feedback_service.reflection import enable_reflection
from feedback_service.servicers.feedback import FeedbackServicer
from feedback_service.servicers.thread_registry import ThreadRegistryServicer
from feedback_service.store.database import Store, open_database
from feedback_service.store.migrations import migrate

log = logging.getLogger(__name__)

SERVICES = (
    feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"],
    thread_registry_pb2.DESCRIPTOR.services_by_name["ThreadRegistry"],
)
SERVICE_NAMES = [service.full_name for service in SERVICES]


@dataclass
class Service:
    """A built, not yet started, server and what it holds."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    store: Store
    database_health: DatabaseHealth
    _watcher: asyncio.Task | None = None

    async def start(self) -> None:
        await self.server.start()
        self._watcher = asyncio.create_task(self.database_health.watch())

    async def stop(self, grace_s: float) -> None:
        """Reports NOT_SERVING, refuses new calls, lets in-flight calls finish."""
        if self._watcher:
            self._watcher.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.store.close()


def build_server(settings: Settings, store: Store, *, reuse_port: bool = False) -> Service:
    authenticator = Authenticator(JwtVerifier(settings.jwt_keys()), ServiceTokens(settings.service_tokens))
    server = grpc.aio.server(
        interceptors=[
            ErrorStatusInterceptor(),
            AuthenticationInterceptor(authenticator),
            AuthorizationInterceptor(declared_rules(SERVICES), store),
        ],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(FeedbackServicer(FeedbackRules(store)), server)
    thread_registry_pb2_grpc.add_ThreadRegistryServicer_to_server(
        ThreadRegistryServicer(ThreadRules(store)), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        enable_reflection(server, [*SERVICE_NAMES, health.SERVICE_NAME])
    port = server.add_insecure_port(settings.listen)
    database_health = DatabaseHealth(store, health_servicer, SERVICE_NAMES, settings.health_interval_s)
    return Service(server, port, health_servicer, store, database_health)


def create_service(settings: Settings, *, reuse_port: bool = False) -> Service:
    """Opens and migrates the database, then builds the server over it."""
    db = open_database(settings.effective_database_url(), settings.db_connect_timeout_s)
    migrate(db)
    return build_server(settings, Store(db, settings.db_workers), reuse_port=reuse_port)
