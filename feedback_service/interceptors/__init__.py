"""Server interceptors, outermost first: error statuses, authentication, authorization."""

# Served to anyone: load balancers probe health, and grpcurl needs reflection
# to discover the API. Every other method needs credentials and a declared rule.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def is_public(method: str) -> bool:
    """True for '/grpc.health.v1.Health/Check' and the like."""
    return method.split("/")[1] in PUBLIC_SERVICES
